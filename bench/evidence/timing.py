"""Timed windows for the evidence benchmark: run an operation until the window is long enough, and
say what it cost per operation and how much of a core the process got meanwhile."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from bench.lib.measure import Window
from bench.lib.report import Report

T = TypeVar("T")


@dataclass(frozen=True)
class Timed:
    window: Window
    cpu_s: float       # this process's CPU seconds over the window

    def detail(self, per: str) -> str:
        w = self.window
        per_op = w.seconds / w.count * 1e6 if w.count else float("nan")
        core = self.cpu_s / w.seconds if w.seconds > 0 else float("nan")
        return f"{per_op:,.2f} µs per {per}; {core:.2f} of a core"


def timed(op: Callable[[int], object], duration: float, unit: str, batch: int = 64) -> Timed:
    """Call op(0), op(1), … in batches until `duration` seconds have passed."""
    count, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        for i in range(count, count + batch):
            op(i)
        count += batch
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            return Timed(Window(count, elapsed, unit), time.process_time() - cpu0)


def grow(make: Callable[[], T], fill: Callable[[T], int], duration: float, unit: str) -> tuple[T, Timed]:
    """Fill fresh objects (a whole pass each) until `duration` has passed; the first one, and the window."""
    first, count, cpu0, start = None, 0, time.process_time(), time.perf_counter()
    while True:
        obj = make()
        count += fill(obj)
        first = obj if first is None else first
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            return first, Timed(Window(count, elapsed, unit), time.process_time() - cpu0)


def once(work: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def rate_row(report: Report, phase: str, metric: str, t: Timed, per: str, minimum: float) -> None:
    report.rate(phase, metric, t.window, minimum=minimum, detail=t.detail(per))


def spread(values: Iterable[int]) -> str:
    ordered = sorted(values)
    mean = sum(ordered) / len(ordered)
    return f"min {ordered[0]}, mean {mean:.1f}, max {ordered[-1]} over {len(ordered):,}"
