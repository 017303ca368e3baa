"""The broker's CPU over a window: per thread (from /proc, by thread name) and JDK Flight Recorder's hot methods.

A recording is started and stopped with `jcmd PID JFR.start/JFR.stop` around the window (the same
recorder `-XX:StartFlightRecording` starts at launch; the broker is run with DebugNonSafepoints so
samples land on the right method). Hot methods are the top frames of jdk.ExecutionSample (Java
code on CPU); a second list names, per sample, the first frame in Kafka's own code, to say which
part of the broker the time went to.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from bench.lib.meters import CLK_TCK

KAFKA_CODE = ("kafka.", "org.apache.kafka.")
SAMPLE_PERIOD = "2 ms"  # JFR's profile settings sample Java code every 10 ms: too few samples on an idle broker


def settings_file(workdir: Path) -> Path:
    """The JDK's profile.jfc with Java method sampling every SAMPLE_PERIOD."""
    java_home = Path(os.path.realpath(shutil.which("java") or "java")).parents[1]
    text = (java_home / "lib" / "jfr" / "profile.jfc").read_text()
    text = re.sub(r'(<event name="jdk.ExecutionSample">.*?<setting name="period"[^>]*>)[^<]*', rf"\g<1>{SAMPLE_PERIOD}",
                  text, count=1, flags=re.S)
    path = workdir / "broker-profile.jfc"
    path.write_text(text)
    return path


def java_names(pid: int) -> dict[int, str]:
    """Native thread id → Java thread name (/proc cuts names to 15 characters; `jcmd Thread.print` has them whole)."""
    out = subprocess.run(["jcmd", str(pid), "Thread.print"], capture_output=True, text=True, timeout=120).stdout
    return {int(nid, 16): name for name, nid in re.findall(r'^"([^"]+)".*? nid=(0x[0-9a-f]+)', out, flags=re.M)}


def group_of(name: str) -> str:
    """'data-plane-kafka-request-handler-3' → 'data-plane-kafka-request-handler'."""
    return re.sub(r"([-_ #]?\d+)+$", "", re.sub(r"-ListenerName\(.*", "-network", name))


def thread_cpu(pid: int, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds so far per thread group."""
    out: Counter = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = names.get(int(tid)) or text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[group_of(name)] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return dict(out)


def thread_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if after.get(k, 0.0) - before.get(k, 0.0) > 0}


class Recording:
    def __init__(self, pid: int, path: Path, name: str, settings: Path):
        self.pid, self.path, self.name, self.settings = pid, path, name, settings

    def jcmd(self, *args: str) -> None:
        subprocess.run(["jcmd", str(self.pid), *args], check=True, capture_output=True, timeout=120)

    async def __aenter__(self) -> "Recording":
        await asyncio.to_thread(self.begin)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.end)

    def begin(self) -> None:
        self.jcmd("JFR.start", f"name={self.name}", f"settings={self.settings}", f"filename={self.path}")
        self.names = java_names(self.pid)
        self.threads0 = thread_cpu(self.pid, self.names)

    def end(self) -> None:
        self.threads = thread_delta(self.threads0, thread_cpu(self.pid, self.names))
        self.jcmd("JFR.stop", f"name={self.name}")


def frames(path: Path) -> list[list[str]]:
    """Each jdk.ExecutionSample's stack, top frame first, as 'package.Class.method'."""
    out = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample", str(path)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    stacks = []
    for event in json.loads(out)["recording"]["events"]:
        trace = (event["values"].get("stackTrace") or {}).get("frames", [])
        stacks.append([f"{f['method']['type']['name'].replace('/', '.')}.{f['method']['name']}" for f in trace])
    return stacks


def hot_methods(path: Path, top: int = 15) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self methods, top first-Kafka-frames) of a recording."""
    stacks = [s for s in frames(path) if s]
    own = Counter(s[0] for s in stacks)
    kafka = Counter(next((f for f in s if f.startswith(KAFKA_CODE)), "(no Kafka frame)") for s in stacks)
    return len(stacks), own.most_common(top), kafka.most_common(top)


def hot_text(title: str, path: Path, threads: dict[str, float], seconds: float, top: int = 15) -> str:
    samples, own, kafka = hot_methods(path, top)
    lines = [f"## {title}: JFR {path} ({samples:,} execution samples)", "",
             "broker CPU by thread (cores over the window): " + ", ".join(
                 f"{k} {v / seconds:.3f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:14]), "",
             "| self samples | % | hot method (top frame) |", "|---|---|---|"]
    lines += [f"| {n:,} | {100 * n / max(samples, 1):.1f} | `{m}` |" for m, n in own]
    lines += ["", "| samples | % | first Kafka frame of the stack |", "|---|---|---|"]
    lines += [f"| {n:,} | {100 * n / max(samples, 1):.1f} | `{m}` |" for m, n in kafka]
    return "\n".join(lines)
