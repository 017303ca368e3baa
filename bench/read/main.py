"""The read benchmark's run: prefill, baselines, catch-up and rebuild, profiles of misses, steady state."""
from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

from bench.lib import cli
from bench.lib.cli import guarded
from bench.lib.report import Report
from bench.lib.tenants import spread_tenants
from bench.lib.topics import bench_settings, delete_topics, drop_read_models
from bench.read.args import parse_args
from bench.read.baseline import baselines
from bench.read.catchup import catch_up_phase
from bench.read.observe import Statements
from bench.read.prefill import prefill
from bench.read.profile import profile_catch_up
from bench.read.steady import Steady, steady_phase
from bench.read.workload import open_projections
from infra.adapters import kafka

log = cli.logger("bench read")


async def phases(args, settings, settings_args: dict, pool, ch, statements: Statements, report: Report) -> None:
    tenants = spread_tenants(args.tenants, args.partitions, f"rb-{settings.topic_prefix[-4:]}")
    log(f"prefill: at least {args.events:,} events")
    pre = await prefill(args, settings, tenants, report)
    report.data["prefill"] = pre
    total = await baselines(args, settings, report)
    if total != pre["events"]:
        report.errors.append(f"the log holds {total} events, the processor appended {pre['events']}")
    projections = await open_projections(settings, pool, ch)
    await catch_up_phase(args, settings, projections, total, statements, report, log)
    missed = {r.metric.split(" ")[0] for r in report.missed("catch-up") + report.missed("rebuild")}
    chosen = [n for n in args.profile_names if args.profile or n in missed]
    if chosen and (args.profile or args.profile_on_miss):
        await profile_catch_up(args, settings, pool, ch, chosen, total, statements, report, log)
    if args.steady:
        steady = Steady(args, settings, settings_args, projections, pool, ch, tenants, pre["events_per_command"],
                        statements, log)
        await steady_phase(steady, report)


async def main_async(args) -> Report:
    from infra.adapters.clickhouse import ChdbClickHouse
    from infra.adapters.postgres import open_pool

    report = Report()
    if not args.database_url:
        report.errors.append("the read benchmark needs PostgreSQL: --database-url or RUNLEDGER_DATABASE_URL")
        return report
    prefix = f"rbench{uuid.uuid4().hex[:8]}"
    settings_args = {"bootstrap": args.bootstrap, "prefix": prefix, "partitions": args.partitions,
                     "secret": secrets.token_urlsafe(48), "database_url": args.database_url}
    settings = bench_settings(**settings_args)
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    args.workdir = str(workdir)
    report.data.update(prefix=prefix, workdir=str(workdir))
    log(f"topic prefix {prefix}, work dir {workdir}")
    await kafka.ensure_topics(settings)
    pool = await open_pool(settings, max_size=10)
    ch = ChdbClickHouse(str(workdir / "chdb"))
    statements = Statements(ch, prefix)
    try:
        await guarded(report, "read benchmark", phases(args, settings, settings_args, pool, ch, statements, report))
    finally:
        statements.detach()
        await pool.close()
        ch.close()
        if not args.keep:
            await cleanup(args, prefix, workdir, report)
    return report


async def cleanup(args, prefix: str, workdir: Path, report: Report) -> None:
    try:
        await delete_topics(args.bootstrap, [prefix])
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not delete the bench topics: {error!r}")
    try:
        await asyncio.to_thread(drop_read_models, args.database_url, [prefix])
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not drop the bench schemas: {error!r}")
    shutil.rmtree(workdir, ignore_errors=True)


def describe(args) -> str:
    rates = ", ".join(f"{r:,.0f}" for r in (*args.low_rates, args.rate))
    return (f"size {args.size}: ≥ {args.events:,} events, {args.tenants} tenants, {args.partitions} partitions; "
            f"steady {rates} ev/s × {args.warmup:g}+{args.duration:g} s; ClickHouse observed by {args.ch_observe}")


def main(argv: list[str] | None = None) -> int:
    return cli.run("runledger read path", parse_args(argv), main_async, describe)
