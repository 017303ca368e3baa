"""Run `serve` (infra.entry.cli, or a --serve-entry) in this process with cProfile switched by signals.

Usage: python -m bench.streams.profiled OUT ENTRY serve [options]. SIGUSR1 starts the profiler,
SIGUSR2 stops it and writes OUT.<k> for the k-th window. The product runs unchanged.
"""
from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
from typing import Any

from bench.lib.procs import ROOT


class Windows:
    def __init__(self, out: str):
        self.out, self.count = out, 0
        self.profiler: cProfile.Profile | None = None

    def start(self, *_: Any) -> None:
        if self.profiler is None:
            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def stop(self, *_: Any) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.count += 1
            self.profiler.dump_stats(f"{self.out}.{self.count}")
            self.profiler = None


def main(out: str, entry: str, argv: list[str]) -> None:
    windows = Windows(out)
    signal.signal(signal.SIGUSR1, windows.start)
    signal.signal(signal.SIGUSR2, windows.stop)
    sys.argv = [entry, *argv]
    os.chdir(ROOT)
    if entry.endswith(".py"):
        runpy.run_path(entry, run_name="__main__")
    else:
        runpy.run_module(entry, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
