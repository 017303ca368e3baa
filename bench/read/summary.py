"""The steady phase's rows for one rate: appended rate, driver, CPU, observers, chdb, then per projector
the end-to-end lag of the probe events, the stored polls and the sampled lag."""
from __future__ import annotations

import bisect
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from bench.lib.measure import Window, fmt_ms, percentile
from bench.lib.meters import cpu_text
from bench.lib.topics import read_range
from bench.read.workload import CH_NAMES
from schemas.envelope import parse_iso

TARGETS = {"lag_p99_ms": 250.0, "rate_share": 0.95}


@dataclass
class Measured:
    sent: dict               # the driver's report
    cpu: dict[str, float]
    drained: bool
    span: tuple[float, float]  # the measured window, wall clock
    start_events: dict[int, int]
    start_replies: dict[int, int]
    sampler: Any
    prober: Any
    observer_chdb: tuple[float, int]
    spy: Any


class ReadBack:
    """The window's events read back from Kafka: count, probe events, and recorded_at by offset."""

    def __init__(self, span: tuple[float, float], probes: set[str]):
        self.span, self.probes = span, probes
        self.in_window = 0
        self.probe_events: list[tuple[str, int, float]] = []  # (tenant, chain_seq, recorded_at)
        self.offsets: dict[int, list[int]] = defaultdict(list)
        self.recorded: dict[int, list[float]] = defaultdict(list)

    def __call__(self, record) -> None:
        env = json.loads(record.value)
        at = parse_iso(env["recorded_at"]).timestamp()
        self.offsets[record.partition].append(record.offset)
        self.recorded[record.partition].append(at)
        if self.span[0] <= at <= self.span[1]:
            self.in_window += 1
            if env["tenant_id"] in self.probes:
                self.probe_events.append((env["tenant_id"], env["chain_seq"], at))

    def recorded_before(self, partition: int, offset: int) -> float | None:
        i = bisect.bisect_left(self.offsets[partition], offset)
        return self.recorded[partition][i - 1] if i else None


def projector_rows(steady, report, phase: str, name: str, m: Measured, back: ReadBack) -> dict:
    t0, t1 = m.span
    seconds = t1 - t0
    lags = [(steady.visibility.visible_at(name, t, s) - at) * 1000 for t, s, at in back.probe_events]
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    unseen = sum(1 for v in lags if math.isinf(v))
    how = ("noted as stored" if name in CH_NAMES and steady.committed else
           f"poll {steady.args.probe_ms * (steady.args.ch_probe_every if name in CH_NAMES else 1):.0f} ms")
    report.check(phase, f"{name}: end-to-end lag p50/p99 (ms), recorded_at → visible",
                 f"{fmt_ms(p50)} / {fmt_ms(p99)} ({len(lags):,} probe events in {seconds:.1f} s"
                 + (f", {unseen} never seen" if unseen else "") + f", {how})",
                 f"p99 < {TARGETS['lag_p99_ms']:.0f}", p99 < TARGETS["lag_p99_ms"], Window(len(lags), seconds, "samples"))
    polls = steady.stored.of(name, t0, t1)
    store_s = sum(s for _, _, s in polls)
    report.info(phase, f"{name}: polls stored (per s, mean events, mean store ms, share of window)",
                f"{len(polls) / seconds:,.1f}/s, {sum(n for _, n, _ in polls) / max(1, len(polls)):,.1f} events, "
                f"{1000 * store_s / max(1, len(polls)):,.1f} ms, {100 * store_s / seconds:.0f}%")
    samples = m.sampler.of(name, t0, t1)
    behind, ms = [s.behind for s in samples], [s.ms for s in samples]
    tail = [s.behind for s in m.sampler.of(name, t1 - 1.0, t1)]
    report.check(phase, f"{name}: sampled lag p50/p99 events, p50/p99 ms behind",
                 f"{percentile(behind, 50):,.0f}/{percentile(behind, 99):,.0f} ev, {fmt_ms(percentile(ms, 50))}/"
                 f"{fmt_ms(percentile(ms, 99))} ms ({len(samples)} samples in {seconds:.1f} s; "
                 f"last second {sum(tail) / max(1, len(tail)):,.0f} ev)",
                 f"p99 < {TARGETS['lag_p99_ms']:.0f} ms", percentile(ms, 99) < TARGETS["lag_p99_ms"],
                 Window(len(samples), seconds, "samples"))
    return {"e2e_p50_ms": p50, "e2e_p99_ms": p99, "e2e_n": len(lags), "unseen": unseen,
            "sampled_ms_p99": percentile(ms, 99), "sampled_events_p99": percentile(behind, 99)}


def window_rows(steady, report, phase: str, rate_events: float, rate_cmd: float, m: Measured,
                back: ReadBack, statuses: dict) -> None:
    t0, t1 = m.span
    appended = Window(back.in_window, t1 - t0)
    report.rate(phase, "events appended/s (recorded_at inside the window)", appended,
                TARGETS["rate_share"] * rate_events, f"offered {rate_cmd:,.0f} commands/s")
    report.info(phase, "driver: send slip p50/p99/max (ms); replies",
                f"{m.sent['slip_p50_ms']:.1f}/{m.sent['slip_p99_ms']:.1f}/{m.sent['slip_max_ms']:.1f}; {statuses}")
    report.info(phase, "CPU (cores) during the window", cpu_text(m.cpu) + ("" if m.drained else "; DID NOT DRAIN"))
    due = (t1 - t0) / m.sampler.every
    taken = len(m.sampler.of("runs", t0, t1))
    report.info(phase, "observers: lag samples taken / due; their own chdb calls in the window",
                f"{taken} / {due:.0f}; {m.observer_chdb[1]:,} calls, "
                f"{1000 * m.observer_chdb[0] / max(1, m.observer_chdb[1]):.1f} ms each incl. waiting for the chdb lock")
    report.info(phase, "chdb statements in the window (on_statement, by kind and table: count × mean time "
                "holding the lock)", steady.statements.summary(t0, t1))


async def summarise(steady, phase: str, rate_events: float, rate_cmd: float, m: Measured, report) -> None:
    back = ReadBack(m.span, set(steady.probes))
    statuses: Counter = Counter()
    settings = steady.settings
    # a few offsets early, so the last event before the window (where lagging positions stood) is known too
    await read_range(settings, settings.events_topic, back, {p: max(0, o - 10) for p, o in m.start_events.items()})
    await read_range(settings, settings.replies_topic, lambda r: statuses.update([json.loads(r.value)["status"]]),
                     m.start_replies)
    m.sampler.resolve(back.recorded_before)
    if set(statuses) - {"accepted"}:
        report.notes.append(f"{phase}: some commands were not accepted: {dict(statuses)}")
    window_rows(steady, report, phase, rate_events, rate_cmd, m, back, dict(statuses))
    lag = {name: projector_rows(steady, report, phase, name, m, back) for name in steady.projections}
    report.data.setdefault("steady", []).append({"rate_events": rate_events, "driver": m.sent, "cpu": m.cpu,
                                                "appended": back.in_window, "lag": lag})
