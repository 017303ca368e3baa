"""Phase 7 (`--telemetry`): what tracing and metrics cost on the write path, export off against on, in one run.

Two measurements, each taken for every variant in the same run, in alternating order over
`--telemetry-rounds` rounds (ABBA: off, export, export, off) so that a drift of the shared machine
falls on both sides:

- **processor**: phase 1's command mix, pre-produced to fresh topics, through
  `serve --no-api --no-projectors`; steady events/s from its replies, and its CPU per event.
- **http**: phase 5's `serve --no-projectors` on fresh topics, driven open-loop at `--http-rate`;
  latency p50/p99 from each command's scheduled send time, and serve's CPU per command.

Variants (docs/operations.md, *Tracing* and *Metrics*, for the variables):

- *off*: no `OTEL_*` variable (the caller's are removed): the default deployment. The SDK is
  installed but samples nothing it is not told to, and no metrics leave the process.
- *export*: traces and metrics over OTLP/HTTP to bench/lib/otlp_sink.py, a process of its own on
  loopback that decodes and counts what it gets (its counts are rows, so the export is shown to
  have happened; an export variant whose service sent no span is an error of the run). Every
  command is sampled (the SDK's default `parentbased_always_on` when exporting): the worst case.
  Metrics are exported every second (`OTEL_METRIC_EXPORT_INTERVAL=1000`, against 60 s by default)
  so that they are exported during the window at all.
- *scrape* (http only): *off*, plus the Prometheus page on `RUNLEDGER_METRICS_PORT` scraped every
  second by the bench, as a Prometheus server would (its default interval is 60 s).

Phase 1's envelopes carry a `traceparent` as the API would mint it in that variant: flags `00`
(not sampled) when off, `01` when exporting. With `01` and no exporter the processor would record
every span and then drop it, a configuration nobody runs.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.lib.cli import guarded
from bench.lib.measure import Dist
from bench.lib.meters import cpu_text
from bench.lib.procs import Child, free_port, python_argv
from bench.write.http import HttpResult, Layout, phase_http
from bench.write.processor import ProcessorResult, produce, result_of, run_processor
from infra.adapters import kafka


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    export: bool = False
    scrape: bool = False

    @property
    def flags(self) -> str:
        """The traceparent flags the API mints in this variant (its root span sampled or not)."""
        return "01" if self.export else "00"


OFF = Variant("off", "telemetry off")
EXPORT = Variant("export", "traces+metrics exported (OTLP/HTTP)", export=True)
SCRAPE = Variant("scrape", "Prometheus page scraped every 1 s", scrape=True)
PROCESSOR_VARIANTS = (OFF, EXPORT)
HTTP_VARIANTS = (OFF, EXPORT, SCRAPE)
VARIANT_LABELS = {v.name: v.label for v in HTTP_VARIANTS}
SCRAPE_INTERVAL_S = 1.0


def in_turn(variants: tuple[Variant, ...], rounds: int) -> list[tuple[int, Variant]]:
    """(round, variant) in the order they run: forwards, then backwards, then forwards (ABBA…)."""
    return [(r, v) for r in range(rounds) for v in (variants if r % 2 == 0 else variants[::-1])]


class Sink:
    """bench/lib/otlp_sink.py as a child process on a free loopback port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.child = Child("otlp-sink", python_argv("bench.lib.otlp_sink", str(self.port)), dict(os.environ), workdir)
        self.http = httpx.AsyncClient(base_url=self.endpoint, timeout=5.0)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.child.check()
            try:
                await self.counts()
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the OTLP sink did not answer within {timeout}s:\n{self.child.tail()}")

    async def counts(self) -> dict[str, dict]:
        response = await self.http.get("/counts")
        response.raise_for_status()
        return response.json()

    async def close(self) -> bool:
        await self.http.aclose()
        return self.child.stopped_cleanly()


def telemetry_env(variant: Variant, sink: Sink, service: str) -> dict[str, str | None]:
    """The variant's OTEL_* variables (None: removed, so the caller's never leak in)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("OTEL_")}
    if variant.export:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_METRIC_EXPORT_INTERVAL="1000", OTEL_SERVICE_NAME=service)
    return env


class Scraper:
    """GET /metrics every second from serve's loopback metrics port; each scrape counted and timed."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.times_ms: list[float] = []
        self.failed = 0
        self.bytes = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                started = time.perf_counter()
                try:
                    response = await http.get(self.url)
                    response.raise_for_status()
                    self.times_ms.append((time.perf_counter() - started) * 1000)
                    self.bytes += len(response.content)
                except httpx.HTTPError:
                    self.failed += bool(self.times_ms)  # before the first answer, serve is still starting
                await asyncio.sleep(max(0.0, SCRAPE_INTERVAL_S - (time.perf_counter() - started)))


@dataclass
class Scrapes:
    latency: Dist
    failed: int
    mean_bytes: float


@dataclass
class TelemetryResult:
    rounds: int
    commands: int
    processor: dict[str, list[ProcessorResult]] = field(default_factory=dict)
    http: dict[str, list[HttpResult]] = field(default_factory=dict)
    received: dict[str, dict[str, dict]] = field(default_factory=dict)  # "processor"/"http" → service → counts
    scrapes: list[Scrapes] = field(default_factory=list)


def flagged(commands: list[dict], flags: str) -> list[dict]:
    return [{**c, "traceparent": c["traceparent"][:-2] + flags} for c in commands]


async def processor_variant(run, variant: Variant, round_: int, commands: list[dict], sink: Sink,
                            report) -> tuple[ProcessorResult, str]:
    prefix = f"{run.prefix}t{len(run.prefixes)}"
    run.prefixes.append(prefix)
    settings = run.settings(prefix)
    await kafka.ensure_topics(settings)
    await produce(settings, flagged(commands, variant.flags), run.args.progress)
    service = f"bench-processor-{variant.name}-{round_ + 1}"
    result = result_of(*await run_processor(run.args, settings, run.workdir, len(commands), report,
                                            name=f"processor-{variant.name}-{round_ + 1}",
                                            env=telemetry_env(variant, sink, service),
                                            watch={"otlp sink": sink.child.pid}))
    if result.statuses.get("rejected"):
        report.errors.append(f"phase 7 ({variant.name}): {result.statuses['rejected']} of {result.commands} "
                             "commands were rejected; the workload should be all-valid")
    return result, service


async def http_variant(run, variant: Variant, round_: int, sink: Sink, report,
                       log) -> tuple[HttpResult, str, Scrapes | None]:
    prefix = f"{run.prefix}t{len(run.prefixes)}"
    run.prefixes.append(prefix)
    service = f"bench-serve-{variant.name}-{round_ + 1}"
    env = telemetry_env(variant, sink, service)
    scraper = scraping = None
    if variant.scrape:
        port = free_port()
        env.update(RUNLEDGER_METRICS_PORT=str(port), RUNLEDGER_METRICS_HOST="127.0.0.1")
        scraper = Scraper(port)
        scraping = asyncio.create_task(scraper.run())
    layout = Layout(False, False, variant=f"{variant.name}-{round_ + 1}")
    try:
        result = await phase_http(run.args, prefix, run.secret, run.workdir, layout, report, log, env,
                                  {"otlp sink": sink.child.pid})
    finally:
        if scraping is not None:
            scraping.cancel()
            await asyncio.gather(scraping, return_exceptions=True)
    if result.errors:
        report.errors.append(f"phase 7 (http, {variant.name}): {result.errors} commands failed: {result.error_kinds}")
    if scraper is None:
        return result, service, None
    if not scraper.times_ms:
        report.errors.append(f"phase 7 (http, scrape): no scrape of {scraper.url} succeeded")
    mean = scraper.bytes / len(scraper.times_ms) if scraper.times_ms else 0.0
    return result, service, Scrapes(Dist.of(scraper.times_ms), scraper.failed, mean)


def check_exported(report, counts: dict[str, dict], services: list[str], what: str) -> None:
    """An export variant whose service the sink never heard from did not export: an error of the run."""
    for service in services:
        if not counts.get(service, {}).get("spans"):
            report.errors.append(f"phase 7 ({what}): the OTLP sink received no span from {service} "
                                 f"(it heard from {sorted(counts)})")


async def phase_telemetry(run, commands: list[dict], report, log) -> TelemetryResult:
    args = run.args
    result = TelemetryResult(args.telemetry_rounds, len(commands))
    sink = Sink(run.workdir)
    try:
        await sink.ready()
        exported: dict[str, list[str]] = {"processor": [], "http": []}
        for round_, variant in in_turn(PROCESSOR_VARIANTS, args.telemetry_rounds):
            what = f"processor, {variant.name}, round {round_ + 1}"
            log(f"phase 7: {what}: {len(commands):,} commands")
            done = await guarded(report, f"phase 7 ({what})",
                                 processor_variant(run, variant, round_, commands, sink, report))
            if done:
                result.processor.setdefault(variant.name, []).append(done[0])
                exported["processor"] += [done[1]] if variant.export else []
                log(f"phase 7: {what}: steady {done[0].steady.rate_text()}; {cpu_text(done[0].cpu)}")
        if args.database_url:
            for round_, variant in in_turn(HTTP_VARIANTS, args.telemetry_rounds):
                what = f"http, {variant.name}, round {round_ + 1}"
                log(f"phase 7: {what}")
                done = await guarded(report, f"phase 7 ({what})", http_variant(run, variant, round_, sink, report, log))
                if done:
                    http, service, scrapes = done
                    result.http.setdefault(variant.name, []).append(http)
                    exported["http"] += [service] if variant.export else []
                    result.scrapes += [scrapes] if scrapes else []
                    log(f"phase 7: {what}: p50 {http.latency.p50:.1f} / p99 {http.latency.p99:.1f} ms "
                        f"({http.latency.n:,} samples); {cpu_text(http.cpu)}")
        else:
            report.notes.append("phase 7 http skipped: the API needs PostgreSQL")
        counts = await sink.counts()
        for part, services in exported.items():
            check_exported(report, counts, services, part)
            result.received[part] = {s: counts.get(s, {}) for s in services}
    finally:
        if not await sink.close():
            report.errors.append(f"the OTLP sink exited with status {sink.child.proc.returncode}; "
                                 f"log: {sink.child.log_path}")
    return result
