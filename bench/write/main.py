"""The write benchmark's run: phases 1-6 in order on one broker, then cleanup (docs/bench.md)."""
from __future__ import annotations

import asyncio
import gc
import io
import pstats
import secrets
import shutil
import tempfile
from pathlib import Path

from bench.lib import cli, host
from bench.lib.cli import guarded
from bench.lib.measure import Window
from bench.lib.report import Report
from bench.lib.tenants import spread_tenants
from bench.lib.topics import bench_settings, delete_topics, drop_read_models
from bench.write import rows
from bench.write.args import parse_args
from bench.write.batch import layouts as batch_layouts, phase_batch
from bench.write.decide import phase_decide
from bench.write.http import layouts, phase_http
from bench.write.peer import phase_peer
from bench.write.processor import phase_processor
from bench.write.raw import phase_raw
from bench.write.telemetry import phase_telemetry
from bench.write.workload import envelopes, workload

log = cli.logger("bench write")


class Run:
    """One run's identity: its prefix (topics, read models), JWT secret and work directory."""

    def __init__(self, args):
        self.args = args
        self.secret = secrets.token_urlsafe(36)  # 48 characters
        self.prefix = f"bench{secrets.token_hex(4)}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rlbench-{self.prefix[5:]}-"))
        self.prefixes = [self.prefix]
        self.tenants = spread_tenants(args.tenants, args.partitions, "bench-t")

    def settings(self, prefix: str | None = None):
        return bench_settings(self.args.bootstrap, prefix or self.prefix, self.args.partitions, self.secret,
                              batch_max=self.args.batch_max)


async def processor_phases(run: Run, report: Report):
    """Phases 1, 1b and 2-3; return phase 1's result (or None)."""
    args = run.args
    commands = envelopes(run.settings(), run.tenants, args.commands)
    proc = await guarded(report, "phase 1 (processor)", phase_processor(args, run.settings(), run.workdir,
                                                                      commands, report, log))
    if proc is None:
        return None
    rows.processor_rows(report, proc)
    decide = await guarded(report, "phase 1b (decide only)", asyncio.to_thread(phase_decide, commands))
    if decide:
        rows.decide_rows(report, decide[0])
    read = report.data.pop("events_topic_read")
    rows.events_read_row(report, Window(read["records"], read["seconds"], "records"))
    if "raw" in args.phases and proc.event_records:
        raw = await guarded(report, "phase 2/3 (raw aiokafka)", phase_raw(args, run.prefix, proc.event_records, report))
        if raw:
            rows.raw_rows(report, raw, proc)
    proc.event_records = []  # free phase 1's records before the latency-sensitive phases
    return proc


async def peer_phase(run: Run, report: Report, proc) -> None:
    if not run.args.database_url:
        report.notes.append("phase 4 skipped: no --database-url / RUNLEDGER_DATABASE_URL")
        return
    work = workload(run.tenants, run.args.peer_commands)
    peer = await guarded(report, "phase 4 (eventsourcing peer)", asyncio.to_thread(phase_peer, run.args, work, log))
    if peer:
        rows.peer_rows(report, peer, proc)


async def http_phase(run: Run, report: Report) -> None:
    if not run.args.database_url:
        report.notes.append("phase 5 skipped except the floor: the API needs PostgreSQL")
    for index, layout in enumerate(layouts(run.args)):
        prefix = f"{run.prefix}h{index}"
        run.prefixes.append(prefix)
        http = await guarded(report, f"phase 5 (http, {layout.label})",
                             phase_http(run.args, prefix, run.secret, run.workdir, layout, report, log))
        if http:
            rows.http_rows(report, layout, http, run.args.http_rate)


async def batch_phase(run: Run, report: Report) -> None:
    if not run.args.database_url:
        report.notes.append("phase 6 skipped: the API needs PostgreSQL")
        return
    for index, layout in enumerate(batch_layouts(run.args)):
        prefix = f"{run.prefix}b{index}"
        run.prefixes.append(prefix)
        batch = await guarded(report, f"phase 6 (batch, {layout.label})",
                              phase_batch(run.args, prefix, run.secret, run.workdir, layout, report, log))
        if batch:
            rows.batch_rows(report, layout, batch, run.args.batch_size, run.args.batch_lanes)


async def telemetry_phase(run: Run, report: Report) -> None:
    commands = envelopes(run.settings(), run.tenants, run.args.commands)
    telemetry = await guarded(report, "phase 7 (telemetry)", phase_telemetry(run, commands, report, log))
    if telemetry:
        rows.telemetry_rows(report, telemetry, run.args.http_rate)
        report.data["telemetry_received"] = telemetry.received  # the sink's counts, spans by name among them


async def cleanup(run: Run, report: Report) -> None:
    try:
        await delete_topics(run.args.bootstrap, run.prefixes)
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not delete bench topics: {error!r}")
    shutil.rmtree(run.workdir / "chdb", ignore_errors=True)
    if run.args.database_url:
        try:
            await asyncio.to_thread(drop_read_models, run.args.database_url, run.prefixes)
        except Exception as error:  # noqa: BLE001
            report.notes.append(f"could not drop the bench read-model schemas: {error!r}")


async def main_async(args) -> Report:
    report, run = Report(), Run(args)
    report.data.update(prefix=run.prefix, workdir=str(run.workdir))
    if note := host.busy_note():
        report.notes.append(note)
    log(f"bench {run.prefix}: broker {args.bootstrap}, logs in {run.workdir}")
    proc = None
    try:
        if args.phases & {"processor", "raw"}:
            proc = await processor_phases(run, report)
        gc.collect()
        gc.freeze()  # keep the collector from walking the long-lived objects during phase 5
        if "peer" in args.phases:
            await peer_phase(run, report, proc)
        if "http" in args.phases:
            await http_phase(run, report)
        if "batch" in args.phases:
            await batch_phase(run, report)
        if "telemetry" in args.phases:
            await telemetry_phase(run, report)
    finally:
        if not args.keep:
            await cleanup(run, report)
    if args.profile and args.profile.exists():
        report.data.setdefault("appendix", []).append(profile_text(args.profile))
    return report


def profile_text(path: Path, limit: int = 30) -> str:
    out = io.StringIO()
    out.write(f"## cProfile of the processor ({path})\n")
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def describe(args) -> str:
    return (f"broker {args.bootstrap}; size {args.size}: {args.commands:,} commands, HTTP {args.http_duration:g} s "
            f"at {args.http_rate:g}/s after {args.http_warmup:g} s. steady = from the first reply batch to the last; "
            "HTTP latency from each command's scheduled send time (open loop); batch ingest "
            f"{args.batch_lanes} clients × {args.batch_rounds} batches of {args.batch_size:,}, closed loop"
            + (f"; telemetry: {args.telemetry_rounds} run(s) of each variant" if "telemetry" in args.phases else ""))


def main(argv: list[str] | None = None) -> int:
    return cli.run("runledger write path", parse_args(argv), main_async, describe)
