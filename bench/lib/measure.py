"""Windows, rates and percentiles, and the rule that says when a window is too short to measure.

A rate or a percentile taken over too little time or too few samples is noise: it gets the verdict
TOO_SHORT, never pass or MISS, and every rate in a table says the window and the count it came from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

MIN_WINDOW_S = 2.0     # a window shorter than this is too short to measure
MIN_SAMPLES = 1_000    # a rate or percentile from fewer samples is too short to measure
TOO_SHORT = "too short to measure"


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100) of values in any order; nan when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Window:
    """`count` things (events, records, samples) over `seconds` of wall time."""
    count: int
    seconds: float
    unit: str = "events"

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")

    @property
    def measurable(self) -> bool:
        return self.seconds >= MIN_WINDOW_S and self.count >= MIN_SAMPLES

    def text(self) -> str:
        return f"{self.count:,} {self.unit} in {self.seconds:.2f} s"

    def rate_text(self) -> str:
        """'4,787/s (50,024 events in 10.45 s)': a rate always says where it came from."""
        return f"{fmt_num(self.rate)}/s ({self.text()})"


@dataclass(frozen=True)
class Dist:
    """Percentiles of samples (e.g. latencies in ms)."""
    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float]) -> "Dist":
        ordered = sorted(values)
        if not ordered:
            return cls(0, *[float("nan")] * 5)
        finite = [v for v in ordered if math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else float("nan")
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99),
                   ordered[-1], mean)


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "∞" if math.isinf(value) else f"{value:,.{digits}f}"


def fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "never seen"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
