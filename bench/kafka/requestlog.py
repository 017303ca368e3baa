"""Every request a broker handled over a window, from its request logger (kafka.request.logger at TRACE).

The level is set at run time (KIP-412 broker loggers) by BrokerLogger.java with the broker's own
client jars, and put back to WARN afterwards: logging every request costs the broker CPU, so a
counting window is never a CPU window. At TRACE each line holds the request's header (API, client
id), its body (a fetch's topics, maxWaitMs, minBytes; a heartbeat's group) and its connection,
which tells one client from another even when they share a client id (aiokafka's default).
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.lib.procs import ROOT

MARK = "Completed request:"
JAVA_TOOL = Path(__file__).with_name("BrokerLogger.java")


def kafka_libs() -> str:
    out = subprocess.run(["bash", str(ROOT / "infra/local/fetch-kafka.sh"), "--libs-dir"], capture_output=True, text=True)
    return out.stdout.strip()


def set_level(bootstrap: str, level: str) -> None:
    subprocess.run(["java", "-cp", f"{kafka_libs()}/*", str(JAVA_TOOL), bootstrap, "1", "kafka.request.logger", level],
                   check=True, capture_output=True, timeout=120)


def stamp(line: str) -> float | None:
    """The epoch seconds of a '[2026-12-02 09:49:17,331] ...' log line (the broker logs in the machine's zone)."""
    try:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


@dataclass
class Traffic:
    """Requests per kind over `seconds`; a kind names what asked (a fetch's topic, wait and minimum size)."""
    seconds: float
    counts: Counter = field(default_factory=Counter)
    connections: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    broker_ms: Counter = field(default_factory=Counter)  # the broker's local (non-waiting) time per kind

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def of(self, api: str) -> int:
        return sum(n for kind, n in self.counts.items() if kind.startswith(api))


def kind_of(entry: dict, prefix: str) -> str:
    header, request = entry["requestHeader"], entry.get("request", {})
    api = header["requestApiKeyName"]
    if api == "FETCH":
        topics = sorted({str(t.get("topic") or t.get("topicId")).removeprefix(prefix + ".") for t in request["topics"]})
        return f"FETCH {'+'.join(topics) or '(none)'} wait {request['maxWaitMs']} ms min {request['minBytes']:,} B"
    if api in ("HEARTBEAT", "OFFSET_COMMIT", "TXN_OFFSET_COMMIT", "JOIN_GROUP", "SYNC_GROUP"):
        return f"{api} {request.get('groupId', '?').removeprefix(prefix + '.')}"
    if header.get("clientId", "").startswith("AddPartitionsManager"):  # KIP-890 verification of a produce
        return f"{api} (broker's own verification)"
    return f"{api} ({entry.get('listener', '?')})"


def parse(lines: list[str], start: float, end: float, prefix: str) -> Traffic:
    traffic = Traffic(end - start)
    for line in lines:
        at, i = stamp(line), line.find(MARK)
        if i < 0 or at is None or not start <= at < end:
            continue
        entry = json.loads(line[i + len(MARK):].rsplit(" (kafka.request.logger)", 1)[0])
        kind = kind_of(entry, prefix)
        traffic.counts[kind] += 1
        traffic.connections[kind].add(entry.get("connection", "?"))
        traffic.broker_ms[kind] += entry.get("localTimeMs", 0.0) + entry.get("requestQueueTimeMs", 0.0)
    return traffic


class Counting:
    """Turn the request logger on, let `seconds` pass (the caller keeps the load going), turn it off, parse."""

    def __init__(self, bootstrap: str, log_path: Path, prefix: str):
        self.bootstrap, self.log_path, self.prefix = bootstrap, log_path, prefix

    async def __aenter__(self) -> "Counting":
        await asyncio.to_thread(set_level, self.bootstrap, "TRACE")  # a JVM start: off the loop that drives the load
        self.offset = self.log_path.stat().st_size
        self.start = time.time() + 0.5  # the level change has reached every request handler by then
        return self

    async def __aexit__(self, *exc) -> None:
        self.end = time.time()
        await asyncio.to_thread(set_level, self.bootstrap, "WARN")
        with open(self.log_path, errors="replace") as f:
            f.seek(self.offset)
            self.traffic = parse(f.readlines(), self.start, self.end, self.prefix)
