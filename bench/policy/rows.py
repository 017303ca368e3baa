"""Phase 4's rows: latency per set, the with/without-policy verdicts, rate, rejections, the processor's CPU."""
from __future__ import annotations

import math

from bench.lib.measure import Window
from bench.lib.meters import cpu_text
from bench.lib.report import Report
from bench.policy.http import SETS, HttpResult

# The verdict: A's p99 (demo envelope) ≤ max(1.2 × the baseline's p99, the baseline's p99 + 2 ms).
# The three sets are interleaved on the same partitions, batches and transactions, so the only
# per-call difference is one evaluate() (~0.1-0.2 ms, phase 2/3 and the in-processor row); the
# margin is for the noise of a p99 taken from 1,000-2,000 samples (its 10th-20th worst), which
# is about a tenth of the p99 on this shared 2-core machine, and at least 2 ms on a quiet one.
MARGIN_RATIO = 1.2
MARGIN_MS = 2.0
PHASE = "http"


def allowed(base_p99: float) -> float:
    return max(base_p99 * MARGIN_RATIO, base_p99 + MARGIN_MS)


def compare(report: Report, http: HttpResult, key: str, what: str) -> None:
    a, base = http.sets["A"], http.sets[key]
    limit = allowed(base.latency.p99)
    shown = (f"{a.latency.p99:.1f} vs {base.latency.p99:.1f} ms ({a.latency.p99 - base.latency.p99:+.1f} ms, "
             f"{a.latency.p99 / base.latency.p99:.2f}×)" if base.latency.n and a.latency.n else "n/a")
    clean = not a.errors and not base.errors
    ok = (a.latency.p99 <= limit and clean) if math.isfinite(limit) and a.latency.n else None
    window = Window(min(a.latency.n, base.latency.n), http.sent.seconds, "samples per set")
    report.check(PHASE, f"p99 A vs {key}: demo envelope vs {what}", shown,
                 f"≤ max({MARGIN_RATIO:g}×, +{MARGIN_MS:g} ms) = {limit:.1f} ms", ok, window)


def http_rows(report: Report, http: HttpResult, rate: float) -> None:
    for pset in SETS:
        result = http.sets[pset.key]
        lat = result.latency
        report.info(PHASE, f"{pset.label}: p50 / p99 / max @ {rate / len(SETS):g} of {rate:g} cmd/s",
                    f"{lat.p50:.1f} / {lat.p99:.1f} / {lat.max:.1f} ms "
                    f"({Window(lat.n, http.sent.seconds, 'samples').text()})")
        rejected = ", ".join(f"{k} × {v:,}" for k, v in sorted(result.errors.items())) or "0"
        report.info(PHASE, f"{pset.label}: decided / rejected by code",
                    f"{pset.expected_text} × {lat.n:,} of {result.sent:,} / {rejected}")
        if result.errors:
            report.errors.append(f"phase http ({pset.label}): {sum(result.errors.values())} calls failed: "
                                 f"{result.errors}")
    compare(report, http, "B", "one unconditional permit")
    compare(report, http, "C", "no envelope (no Cedar)")
    report.info(PHASE, "offered / accepted rate, all sets",
                f"{http.sent.rate_text()} / {http.completed.rate_text()}; max send lag {http.max_send_lag_ms:.0f} ms")
    report.info(PHASE, "CPU used (cores)", cpu_text(http.cpu))
    evaluation_rows(report, http)


def evaluation_rows(report: Report, http: HttpResult) -> None:
    """What evaluate() took inside the processor: wall and CPU per call, and its share of the processor."""
    if not http.evaluations or not http.timing_span_s:
        report.info(PHASE, "evaluate() inside the processor", "n/a (not timed: --no-http-timing, or no timings read)")
        return
    each = {k: v for k, v in sorted(http.evaluations.items()) if v[0]}
    report.info(PHASE, "evaluate() inside the processor, per call: wall / thread CPU",
                ", ".join(f"{k} {wall / n * 1e6:,.0f} / {cpu / n * 1e6:,.0f} µs" for k, (n, wall, cpu) in each.items())
                + " (" + " / ".join(f"{n:,}" for n, _, _ in each.values()) + " calls)")
    span = http.timing_span_s
    wall = sum(v[1] for v in each.values()) / span
    cpu = sum(v[2] for v in each.values()) / span
    a = each.get("A")
    ceiling = (f"; at A's {a[1] / a[0] * 1e6:,.0f} µs one processor thread evaluates at most {a[0] / a[1]:,.0f} "
               "calls/s" if a else "")
    report.info(PHASE, "processor thread's time inside evaluate(), per second of the window",
                f"{wall * 1e3:,.0f} ms/s wall, {cpu * 1e3:,.0f} ms/s CPU (all sets; {span:.2f} s between snapshots)"
                + ceiling)
    processor = http.cpu.get(http.processor_group)
    if processor and http.completed.count:
        per_call_us = processor / http.completed.rate * 1e6
        what = "processor" if http.processor_group == "processor" else "serve (API+processor)"
        report.info(PHASE, f"evaluate()'s share of the {what} process's CPU",
                    f"{cpu / processor:.1%} ({cpu:.3f} of {processor:.2f} cores; "
                    f"{per_call_us:,.0f} µs of its CPU per call)")
    if http.processor_threads:
        report.notes.append(f"threads of the processor process: {', '.join(http.processor_threads)}")
