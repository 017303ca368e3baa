"""The one way every benchmark measures CPU and memory: /proc, per process group, over a window.

CPU is reported in cores (CPU seconds per wall second) per named group of processes, plus
"others": what the whole machine was busy with meanwhile beyond those groups (other sessions'
brokers and benchmarks share these cores and skew every number).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
Groups = dict[str, list[int]]


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds a process (all its threads) has used so far; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def memory_mb(pid: int | None, key: str = "VmRSS") -> float | None:
    """VmRSS (now) or VmHWM (peak) of a process in MiB."""
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


def with_children(pid: int) -> list[int]:
    """pid and its direct children (PostgreSQL: the postmaster and its backends)."""
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


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat, minus idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def stack_pid(home: str | None, name: str) -> int | None:
    """The pid an infra/local/stack.sh home recorded for a service (kafka, postgres)."""
    try:
        return int(Path(home, f"{name}.pid").read_text().split()[0]) if home else None
    except (OSError, ValueError, IndexError):
        return None


def stack_groups(home: str | None) -> dict[str, int]:
    """The broker and PostgreSQL of a stack home, as group roots (PostgreSQL counts with its backends)."""
    found = {"broker": stack_pid(home, "kafka"), "postgres": stack_pid(home, "postgres")}
    return {k: v for k, v in found.items() if v and cpu_seconds(v) is not None}


class CpuMeter:
    """Cores used by named process groups over a window, and by everything else on the machine.

    `roots` are pids whose direct children count too (PostgreSQL's backends come and go, so they
    are listed again at the end of the window; one that appeared meanwhile counts from zero).
    """

    def __init__(self, groups: dict[str, int | list[int] | None], roots: dict[str, int] | None = None):
        self.groups: Groups = {k: v if isinstance(v, list) else [v] for k, v in groups.items() if v}
        self.roots = roots or {}
        self.wall = time.perf_counter()
        self.machine = machine_busy_seconds()
        self.start = {p: cpu_seconds(p) for p in self.pids()}

    @classmethod
    def with_stack(cls, groups: dict[str, int | list[int] | None], home: str | None) -> "CpuMeter":
        """A meter of groups plus the broker and PostgreSQL (with its backends) of a stack home."""
        found = stack_groups(home)
        roots = {"postgres": found.pop("postgres")} if "postgres" in found else {}
        return cls({**groups, **found}, roots)

    def pids(self) -> set[int]:
        found = {p for pids in self.groups.values() for p in pids}
        return found | {p for root in self.roots.values() for p in with_children(root)}

    def used(self, pids: list[int], end: dict[int, float | None]) -> float:
        return sum((end.get(p) or 0.0) - (self.start.get(p) or 0.0) for p in pids if end.get(p) is not None)

    def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.perf_counter() - self.wall)
        end = {p: cpu_seconds(p) for p in self.pids() | set(self.start)}
        groups = {**self.groups, **{k: with_children(r) for k, r in self.roots.items()}}
        out = {name: max(0.0, self.used(pids, end)) / wall for name, pids in groups.items()}
        machine = (machine_busy_seconds() - self.machine) / wall
        return {"machine": machine, **out, "others": max(0.0, machine - sum(out.values()))}


def cpu_text(cpu: dict[str, float]) -> str:
    """'machine 1.99: processor 0.95, broker 0.29, others 0.70'."""
    rest = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "machine")
    return f"machine {cpu['machine']:.2f}: {rest}" if "machine" in cpu else rest
