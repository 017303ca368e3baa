"""Pieces every benchmark here shares: the report table, and subprocesses stopped by their own pid."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU seconds a process (all its threads) has used so far."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_status_mb(pid: int | None, key: str) -> float | None:
    """VmRSS / VmHWM of a process in MiB."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children_of(pid: int | None) -> list[int]:
    """pid and its direct children (PostgreSQL: the postmaster and its backends); [] without a pid."""
    if not pid:
        return []
    out = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot (/proc/stat, minus idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / CLK_TCK


@dataclass
class Row:
    phase: str
    metric: str
    measured: str
    target: str = "—"
    verdict: str = "info"


@dataclass
class ReportBase:
    """Rows of measured vs target; each benchmark adds its own ways of adding rows."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        header = ("phase", "metric", "measured", "target", "verdict")
        rows = [header] + [(r.phase, r.metric, r.measured, r.target, r.verdict) for r in self.rows]
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(header), sep] + [line(r) for r in rows[1:]])


class Child:
    """A subprocess a benchmark started, logging to a file; stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 stop_timeout: float = 60):
        self.name = name
        self.argv = argv
        self.stop_timeout = stop_timeout
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} (pid {self.pid}) ignored SIGTERM for {self.stop_timeout}s; killing it",
                      file=sys.stderr, flush=True)
                self.proc.kill()
                self.proc.wait(10)
        self.log_file.close()
        return self.proc.returncode
