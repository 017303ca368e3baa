"""What a result was measured on: the machine, the code under test, the load around it."""
from __future__ import annotations

import os
import platform
import subprocess

from bench.lib.procs import ROOT


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}: {os.cpu_count()} × {model}, {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def git_state() -> str:
    """The commit under test and any uncommitted changes to tracked files (they are measured too)."""
    if os.environ.get("BENCH_CODE"):  # e.g. a `git archive` snapshot, which has no .git
        return os.environ["BENCH_CODE"]

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.rstrip("\n")
    head = git("rev-parse", "--short", "HEAD").strip() or "not a git checkout"
    dirty = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return head + (f" + uncommitted changes to {', '.join(line[3:] for line in dirty)}" if dirty else " (clean)")


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def busy_note() -> str | None:
    """A note if the machine was already busy (1-minute load above half its cores)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores / 2:
        return (f"the machine was already busy at the start (1-min load average {load:.2f} on {cores} cores): "
                "expect lower, noisier numbers")
    return None
