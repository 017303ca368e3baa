"""The write benchmark's rows: every number next to its target, each rate with its window and count."""
from __future__ import annotations

from bench.lib.measure import Window
from bench.lib.meters import cpu_text
from bench.lib.report import Report
from bench.write.batch import BatchResult
from bench.write.http import HttpResult, Layout
from bench.write.processor import ProcessorResult
from bench.write.raw import RawResult

TARGETS = {"processor_events_s": 25_000, "ratio_raw_produce": 0.40, "ratio_peer": 3.0, "http_p99_ms": 25.0,
           "batch_events_s": 10_000}
PEER_LABELS = {"batch": "1,000 commands per save", "single": "1 command per save",
               "batch+db-functions": "1,000 per save, POSTGRES_ENABLE_DB_FUNCTIONS"}


def weakest(*windows: Window) -> Window:
    """The window a derived number is as good as: the first one too short to measure, else the first."""
    return next((w for w in windows if not w.measurable), windows[0])


def processor_rows(report: Report, proc: ProcessorResult) -> None:
    phase = "1 processor"
    report.rate(phase, "append throughput, events/s (steady)", proc.steady, TARGETS["processor_events_s"],
                f"first batch of {proc.excluded_commands:,} commands excluded")
    report.rate(phase, "commands/s (steady)", proc.steady_commands)
    report.rate(phase, "events/s incl. start-up + rebuild", proc.since_spawn,
                detail=f"first reply {proc.first_reply_after_s:.1f} s after spawn")
    report.info(phase, "commands → events", f"{proc.commands:,} → {proc.events:,} ({proc.statuses})")
    report.info(phase, "CPU used (cores) during the window", cpu_text(proc.cpu))
    report.info(phase, "peak RSS of the processor", "n/a" if proc.rss_mb is None else f"{proc.rss_mb:,.0f} MB")


def decide_rows(report: Report, decide: Window) -> None:
    report.rate("1 processor", "decide+seal+encode only, no Kafka, events/s", decide,
                detail="one process: its CPU ceiling")


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
    else:
        report.check("5 http", f"{label}: p99 latency at {rate:g} cmd/s", shown, f"< {TARGETS['http_p99_ms']:g} ms",
                     lat.p99 < TARGETS["http_p99_ms"] and not http.errors, samples)
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
