"""The write benchmark's rows: every number next to its target, each rate with its window and count."""
from __future__ import annotations

import math

from bench.lib.measure import TOO_SHORT, Dist, Window, fmt_num
from bench.lib.meters import cpu_text
from bench.lib.report import Report, Row
from bench.write.batch import BatchResult
from bench.write.http import HttpResult, Layout
from bench.write.processor import ProcessorResult
from bench.write.raw import RawResult
from bench.write.telemetry import VARIANT_LABELS, TelemetryResult

# Issue 14's targets: the processor against the same run's baselines, the decide path per event, HTTP p99 at the
# offered rate (without / with projectors in the process), one command at a time (a rate of at most
# ONE_AT_A_TIME_RATE: each command answered long before the next is sent), batch ingest end to end.
TARGETS = {"ratio_raw_produce": 0.60, "ratio_peer": 2.0, "decide_us": 40.0, "http_p99_ms": 50.0,
           "http_p99_projectors_ms": 100.0, "http_one_p50_ms": 8.0, "batch_events_s": 10_000}
ONE_AT_A_TIME_RATE = 20.0
PEER_LABELS = {"batch": "1,000 commands per save", "single": "1 command per save",
               "batch+db-functions": "1,000 per save, POSTGRES_ENABLE_DB_FUNCTIONS"}


def weakest(*windows: Window) -> Window:
    """The window a derived number is as good as: the first one too short to measure, else the first."""
    return next((w for w in windows if not w.measurable), windows[0])


def processor_rows(report: Report, proc: ProcessorResult) -> None:
    phase = "1 processor"
    report.rate(phase, "append throughput, events/s (steady)", proc.steady,
                detail=f"first batch of {proc.excluded_commands:,} commands excluded")
    report.rate(phase, "commands/s (steady)", proc.steady_commands)
    report.rate(phase, "events/s incl. start-up + rebuild", proc.since_spawn,
                detail=f"first reply {proc.first_reply_after_s:.1f} s after spawn")
    report.info(phase, "commands → events", f"{proc.commands:,} → {proc.events:,} ({proc.statuses})")
    report.info(phase, "CPU used (cores) during the window", cpu_text(proc.cpu))
    report.info(phase, "peak RSS of the processor", "n/a" if proc.rss_mb is None else f"{proc.rss_mb:,.0f} MB")


def decide_rows(report: Report, decide: Window) -> None:
    report.rate("1 processor", "decide+seal+encode only, no Kafka, events/s", decide,
                detail="one process: its CPU ceiling")
    us = decide.seconds / max(1, decide.count) * 1e6
    report.check("1 processor", "decide+seal+encode, µs per event", f"{us:.1f} µs", f"≤ {TARGETS['decide_us']:g} µs",
                 us <= TARGETS["decide_us"], decide)


def events_read_row(report: Report, read: Window) -> None:
    report.rate("3 consume", "events topic read_committed, records/s", read)


def raw_rows(report: Report, raw: RawResult, proc: ProcessorResult | None) -> None:
    mean = raw.bytes / max(1, raw.produced.count)
    report.rate("2 produce", "raw aiokafka produce ceiling, records/s", raw.produced,
                detail=f"{mean:.0f} B each, {raw.bytes / raw.produced.seconds / 1e6:.1f} MB/s")
    if proc is not None:
        ratio = proc.steady.rate / raw.produced.rate
        report.check("2 produce", "processor / raw produce", f"{ratio:.0%}", f"≥ {TARGETS['ratio_raw_produce']:.0%}",
                     ratio >= TARGETS["ratio_raw_produce"], weakest(proc.steady, raw.produced))
    report.info("2 produce", "raw produce: CPU used (cores)", cpu_text(raw.cpu))
    report.rate("3 consume", "raw aiokafka consume, records/s", raw.consumed)


def peer_rows(report: Report, peer: dict[str, dict], proc: ProcessorResult | None) -> None:
    for mode, result in peer.items():
        report.rate("4 peer", f"eventsourcing/postgres {mode} ({PEER_LABELS[mode]}), events/s", result["window"])
        report.info("4 peer", f"{mode}: CPU used (cores; others include PostgreSQL)", cpu_text(result["cpu"]))
    best = max((m for m in peer if m != "single"), key=lambda m: peer[m]["window"].rate, default=None)
    if proc is not None and best:
        ratio = proc.steady.rate / peer[best]["window"].rate
        report.check("4 peer", f"processor / peer ({best})", f"{ratio:.2f}×", f"≥ {TARGETS['ratio_peer']:.0f}×",
                     ratio >= TARGETS["ratio_peer"], weakest(proc.steady, peer[best]["window"]))


def http_rows(report: Report, layout: Layout, http: HttpResult, rate: float) -> None:
    label, lat = layout.label, http.latency
    samples = Window(lat.n, http.window.seconds, "samples")
    shown = f"{lat.p99:.1f} ms ({samples.text()})"
    if layout.floor:
        report.info("5 http", f"{label}: p99 latency at {rate:g} cmd/s", shown)
    elif rate <= ONE_AT_A_TIME_RATE:
        report.info("5 http", f"{label}: p99 latency at {rate:g} cmd/s", shown)
        report.check("5 http", f"{label}: p50 latency, one command at a time ({rate:g} cmd/s)", f"{lat.p50:.1f} ms",
                     f"≤ {TARGETS['http_one_p50_ms']:g} ms", lat.p50 <= TARGETS["http_one_p50_ms"] and not http.errors,
                     samples)
    else:
        target = TARGETS["http_p99_projectors_ms" if layout.projectors else "http_p99_ms"]
        report.check("5 http", f"{label}: p99 latency at {rate:g} cmd/s", shown, f"< {target:g} ms",
                     lat.p99 < target and not http.errors, samples)
    report.info("5 http", f"{label}: p50 / p95 / max latency", f"{lat.p50:.1f} / {lat.p95:.1f} / {lat.max:.1f} ms")
    report.info("5 http", f"{label}: sent / errors / offered rate",
                f"{http.window.count:,} / {http.errors} / {http.window.rate:.0f} per s "
                f"(max send lag {http.max_send_lag_ms:.0f} ms)")
    report.info("5 http", f"{label}: CPU used (cores)", cpu_text(http.cpu))
    report.info("5 http", f"{label}: peak RSS",
                ", ".join(f"{k} {v:,.0f} MB" for k, v in http.rss_mb.items() if v is not None) or "n/a")
    if http.errors:
        report.errors.append(f"phase 5 ({label}): {http.errors} commands failed: {http.error_kinds}")


def batch_rows(report: Report, layout: Layout, batch: BatchResult, size: int, lanes: int) -> None:
    label, lat = layout.label, batch.latency
    report.rate("6 batch", f"{label}: batch ingest through HTTP, events/s ({size:,} per request, {lanes} clients)",
                batch.events, TARGETS["batch_events_s"], "each command decided, its events committed, replied")
    report.rate("6 batch", f"{label}: commands accepted/s", batch.commands)
    report.info("6 batch", f"{label}: per batch p50 / p99 / max",
                f"{lat.p50:,.0f} / {lat.p99:,.0f} / {lat.max:,.0f} ms ({batch.batches} batches)")
    report.info("6 batch", f"{label}: CPU used (cores)", cpu_text(batch.cpu))
    report.info("6 batch", f"{label}: peak RSS",
                ", ".join(f"{k} {v:,.0f} MB" for k, v in batch.rss_mb.items() if v is not None) or "n/a")
    if batch.refused:
        report.errors.append(f"phase 6 ({label}): commands that should be valid were not accepted: {batch.refused}")


def measured_row(report: Report, phase: str, metric: str, measured: str, *windows: Window) -> None:
    """An info row, or TOO_SHORT when a window it comes from cannot tell (never a verdict from noise)."""
    report.rows.append(Row(phase, metric, measured, "—", "info" if weakest(*windows).measurable else TOO_SHORT))


def pooled(results: list) -> Window:
    """Phase 7's processor rounds of one variant as one window: every steady event over every steady second."""
    return Window(sum(r.steady.count for r in results), sum(r.steady.seconds for r in results))


def cpu_per(results: list, group: str, window_of, unit: int) -> float:
    """µs of `group`'s CPU per counted thing, over every round (cores × seconds / count)."""
    used = sum(r.cpu.get(group, 0.0) * window_of(r).seconds for r in results)
    return used / max(1, sum(window_of(r).count for r in results)) * unit


def change(on: float, off: float) -> str:
    return f"{on / off - 1:+.0%}" if off and math.isfinite(off) and math.isfinite(on) else "n/a"


def received_text(counts: dict[str, dict], commands: int | None = None) -> str:
    spans = sum(c.get("spans", 0) for c in counts.values())
    decide = sum(c.get("names", {}).get("runledger.decide", 0) for c in counts.values())
    points = sum(c.get("points", 0) for c in counts.values())
    requests = sum(c.get("trace_requests", 0) + c.get("metric_requests", 0) for c in counts.values())
    megabytes = sum(c.get("bytes", 0) for c in counts.values()) / 1e6
    of = f" for {commands:,} commands" if commands else ""
    return (f"{spans:,} spans ({decide:,} runledger.decide{of}), {points:,} metric points, "
            f"{requests:,} requests, {megabytes:.1f} MB")


def telemetry_rows(report: Report, t: TelemetryResult, rate: float) -> None:
    phase = "7 telemetry"
    runs = f"{t.rounds} runs each, in turn forwards and backwards" if t.rounds > 1 else "1 run each"
    if {"off", "export"} <= set(t.processor):
        off, on = pooled(t.processor["off"]), pooled(t.processor["export"])
        for name, window in (("off", off), ("export", on)):
            measured_row(report, phase, f"processor events/s (steady), {VARIANT_LABELS[name]}",
                         f"{window.rate_text()}; {runs}", window)
        measured_row(report, phase, "processor events/s: export / off",
                     f"{on.rate / off.rate:.2f}× ({change(on.rate, off.rate)}): {fmt_num(on.rate)} vs "
                     f"{fmt_num(off.rate)}/s", off, on)
        steady = lambda r: r.steady  # noqa: E731
        cpu = {n: cpu_per(t.processor[n], "processor", steady, 1_000_000) for n in ("off", "export")}
        each = {n: ", ".join(f"{cpu_per([r], 'processor', steady, 1_000_000):.0f}" for r in t.processor[n])
                for n in ("off", "export")}
        measured_row(report, phase, "processor CPU per event: export vs off",
                     f"{cpu['export']:.0f} vs {cpu['off']:.0f} µs ({change(cpu['export'], cpu['off'])}); "
                     f"each run {each['export']} vs {each['off']} µs", off, on)
        for name in ("off", "export"):
            report.info(phase, f"processor CPU used (cores), {name}",
                        "; ".join(cpu_text(r.cpu) for r in t.processor[name]))
        report.info(phase, "OTLP sink received from the processor (export)",
                    received_text(t.received.get("processor", {}), t.commands * len(t.processor["export"])))
    if "off" not in t.http:
        return
    dist = {n: Dist.of(v for r in rs for v in r.latencies_ms) for n, rs in t.http.items()}
    samples = {n: Window(dist[n].n, sum(r.window.seconds for r in rs), "samples") for n, rs in t.http.items()}
    for name, d in dist.items():
        measured_row(report, phase, f"http p50 / p99 at {rate:g} cmd/s, {VARIANT_LABELS[name]}",
                     f"{d.p50:.1f} / {d.p99:.1f} ms ({samples[name].text()}); {runs}", samples[name])
    sent = lambda r: r.window  # noqa: E731
    for name in (n for n in dist if n != "off"):
        on, off = dist[name], dist["off"]
        measured_row(report, phase, f"http {name} vs off: p50 / p99",
                     f"p50 {on.p50:.1f} vs {off.p50:.1f} ms ({change(on.p50, off.p50)}), "
                     f"p99 {on.p99:.1f} vs {off.p99:.1f} ms ({change(on.p99, off.p99)})", samples["off"], samples[name])
        cpu_on, cpu_off = (cpu_per(t.http[n], "serve", sent, 1_000) for n in (name, "off"))
        each_on, each_off = (", ".join(f"{cpu_per([r], 'serve', sent, 1_000):.2f}" for r in t.http[n])
                             for n in (name, "off"))
        measured_row(report, phase, f"http serve CPU per command: {name} vs off",
                     f"{cpu_on:.2f} vs {cpu_off:.2f} ms ({change(cpu_on, cpu_off)}); each run {each_on} vs "
                     f"{each_off} ms", samples["off"], samples[name])
    for name, rs in t.http.items():
        report.info(phase, f"http CPU used (cores), {name}", "; ".join(cpu_text(r.cpu) for r in rs))
    if "export" in t.http:
        report.info(phase, "OTLP sink received from serve (export)", received_text(t.received.get("http", {})))
    if t.scrapes:
        count = sum(s.latency.n for s in t.scrapes)
        report.info(phase, "Prometheus scrapes (scrape)", "none succeeded" if not count else
                    f"{count:,} at 1 per s, {sum(s.failed for s in t.scrapes)} failed; each p50 "
                    f"{t.scrapes[0].latency.p50:.1f} / max {max(s.latency.max for s in t.scrapes):.1f} ms, "
                    f"{t.scrapes[0].mean_bytes / 1e3:.0f} kB")
