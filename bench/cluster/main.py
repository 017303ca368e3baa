"""runledger on a three-broker cluster: end-to-end throughput with one and with two processors (docs/scaling.md).

On a KRaft cluster of its own (infra/local/cluster.sh: three brokers, topics with replication factor 3 and
min.insync.replicas 2; or --bootstrap), for each processor count in --processors, in the same run: fresh
topics; the command mix of the write benchmark (bench/write/workload.py) produced in bulk; then that many
`serve --no-api --no-projectors` started, and the replies and events read (read_committed, records counted
as they commit) until every command has its reply: from the commands on the log to their events and replies
committed (the HTTP API is not in it: bench/run.sh write measures that). Steady window: from when the
processors own every partition between them (and 5 % of the replies) to 95 % of the replies, so start-up,
the first rebalance and the tail are left out; a window under --min-window-s (10 s) is too short to measure
and gets no verdict. The cores used by the processors, the brokers and everything
else on the machine (other tests, other helpers) are reported beside each number.
"""
from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.failover.kills import Processors
from bench.lib import cli, host
from bench.lib.cluster import KafkaCluster
from bench.lib.measure import TOO_SHORT, Window
from bench.lib.meters import CpuMeter, cpu_text
from bench.lib.report import Report, Row
from bench.lib.tenants import spread_tenants
from bench.lib.topics import bench_settings, delete_topics, produce_all, tps
from bench.write.workload import envelopes
from infra.adapters import kafka
from infra.adapters.settings import Settings

log = cli.logger("bench cluster")
SIZES: cli.Sizes = {"full": {"commands": 200000}, "quick": {"commands": 100000}, "smoke": {"commands": 3000}}


@dataclass
class Phase:
    processors: int
    commands: Window
    events: Window
    produced_s: float
    cpu: dict[str, float]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser("python -m bench.cluster", __doc__.splitlines()[0])
    p.add_argument("--processors", default="1,2", help="processor counts to measure, in this order (default 1,2)")
    p.add_argument("--partitions", type=int, default=6, help="partitions of the ledger topics (default 6)")
    p.add_argument("--tenants", type=int, default=48, help="tenants, spread evenly over the partitions")
    p.add_argument("--commands", type=int, help="commands per phase (" + cli.size_help(SIZES, "commands") + ")")
    p.add_argument("--replication-factor", type=int, default=3, help="of the topics (default 3)")
    p.add_argument("--min-insync", type=int, default=2, help="min.insync.replicas of the topics (default 2)")
    p.add_argument("--min-window-s", type=float, default=10.0, help="a steady window shorter than this gets no "
                                                                     "verdict (default 10)")
    args = cli.sized(p.parse_args(argv), SIZES)
    args.counts = [int(n) for n in args.processors.split(",") if n.strip()]
    if not args.counts or min(args.counts) < 1 or max(args.counts) > args.partitions:
        p.error("--processors: counts from 1 to --partitions")
    return args


async def counted(consumer: AIOKafkaConsumer, settings: Settings, samples: list[tuple[float, int, int]]) -> None:
    """Read the replies and the events (read_committed) as they commit; after each fetch, note when and how many
    of each so far (records, not offsets: every transaction's commit marker takes an offset too)."""
    replies = events = 0
    while True:
        for tp, records in (await consumer.getmany(timeout_ms=200, max_records=20000)).items():
            if tp.topic == settings.replies_topic:
                replies += len(records)
            else:
                events += len(records)
        samples.append((time.monotonic(), replies, events))
        await asyncio.sleep(0)


def settled(procs: Processors, count: int, partitions: int) -> bool:
    """Every partition owned, by `count` processors that each own some."""
    for child in procs.children.values():
        child.check()
    owners = procs.owners()
    return len(owners) == count and all(owners.values()) and \
        sorted(p for ps in owners.values() for p in ps) == list(range(partitions))


async def phase(args, count: int, workdir: Path, broker_pids: list[int]) -> Phase:
    prefix = f"benchcl{count}" + secrets.token_hex(3)
    settings = bench_settings(args.bootstrap, prefix, args.partitions, secrets.token_urlsafe(48),
                              replication_factor=args.replication_factor, min_insync_replicas=args.min_insync)
    await kafka.ensure_topics(settings)
    extra = {"RUNLEDGER_REPLICATION_FACTOR": str(args.replication_factor),
             "RUNLEDGER_MIN_INSYNC_REPLICAS": str(args.min_insync)}
    procs = Processors(settings, workdir / f"p{count}", extra)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest", group_id=None,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    consumer.assign([*tps(settings, settings.replies_topic), *tps(settings, settings.events_topic)])
    reading = None
    try:
        # Every command on the log before any processor starts, so the producer's CPU is not in the window.
        commands = envelopes(settings, spread_tenants(args.tenants, args.partitions, prefix), args.commands)
        began = time.monotonic()
        await produce_all(settings.kafka_bootstrap, (
            {"topic": settings.commands_topic, "value": kafka.dumps(env), "key": env["tenant_id"].encode()}
            for env in commands))
        produced_s = time.monotonic() - began
        del commands
        log(f"{args.commands:,} commands on the log in {produced_s:.1f} s; starting {count} processor(s)")
        samples: list[tuple[float, int, int]] = [(time.monotonic(), 0, 0)]
        reading = asyncio.create_task(counted(consumer, settings, samples))
        for i in range(count):
            procs.start(f"processor-{i + 1}")
        meter, settled_at = None, None
        while samples[-1][1] < args.commands:
            if settled_at is None and settled(procs, count, args.partitions):
                # the window starts once the group has its final assignment (the first to join takes every
                # partition until the others arrive)
                settled_at = time.monotonic()
                meter = CpuMeter({"processors": [c.pid for c in procs.children.values()], "brokers": broker_pids})
                log(f"{count} processor(s) own the {args.partitions} partitions, "
                    f"{samples[-1][1]:,} commands already answered")
            for child in procs.children.values():
                child.check()
            if reading.done():
                reading.result()
            await asyncio.sleep(0.25)  # how often the counts are looked at
            if time.monotonic() - samples[0][0] > 900:
                raise RuntimeError(f"only {samples[-1][1]:,} of {args.commands:,} replies after 900 s")
        if meter is None:
            raise RuntimeError(f"every command was answered before the {count} processors settled: raise --commands")
        cpu = meter.stop()
    finally:
        if reading:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        await consumer.stop()
        unclean = procs.stop()
        await delete_topics(args.bootstrap, [prefix])
    if unclean:
        raise RuntimeError(f"processors did not stop cleanly: {unclean}")
    lo = next(s for s in samples if s[1] >= 0.05 * args.commands and s[0] >= settled_at)
    hi = next(s for s in samples if s[1] >= 0.95 * args.commands)
    seconds = max(0.0, hi[0] - lo[0])
    return Phase(count, Window(max(0, hi[1] - lo[1]), seconds, "commands"),
                 Window(max(0, hi[2] - lo[2]), seconds, "events"), produced_s, cpu)


async def main_async(args) -> Report:
    report, workdir = Report(), Path(tempfile.mkdtemp(prefix="rlbench-cluster-"))
    phases = []
    for count in args.counts:
        result = await cli.guarded(report, f"{count} processor(s)", phase(args, count, workdir, args.broker_pids))
        if result is None:
            continue
        phases.append(result)
        verdict = TOO_SHORT if result.events.seconds < args.min_window_s or not result.events.measurable else "info"
        name = f"{count} processor{'s' if count > 1 else ''}"
        report.rows.append(Row(name, "events/s, commands → events committed", result.events.rate_text(),
                               f"window ≥ {args.min_window_s:g} s", verdict))
        report.info(name, "commands/s (replies)", result.commands.rate_text())
        report.info(name, "commands produced beforehand in", f"{result.produced_s:.1f} s")
        report.info(name, "cores used in the window", cpu_text(result.cpu))
    measured = [p for p in phases if p.events.seconds >= args.min_window_s and p.events.measurable]
    if len(measured) >= 2:
        base = measured[0]
        for other in measured[1:]:
            report.info("scaling", f"{other.processors} vs {base.processors} processors",
                        f"× {other.events.rate / base.events.rate:.2f} events/s")
    report.data["phases"] = [vars(p) | {"commands": vars(p.commands), "events": vars(p.events)} for p in phases]
    report.notes.append(f"work directory (processor logs): {workdir}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before, busy = datetime.now(timezone.utc), host.load_text(), host.busy_note()  # before it loads
    own = None if args.bootstrap else KafkaCluster("rlbench-cluster-")
    try:
        if own:
            log(f"starting a three-broker cluster of its own in {own.home} (ports {own.base_port}..)")
            own.up()
            args.bootstrap = own.bootstrap
        args.broker_pids = own.pids() if own else []
        report = asyncio.run(main_async(args))
    finally:
        if own:
            own.down()
    if busy:
        report.notes.append(busy)
    cli.print_report("runledger cluster", started, load_before, report,
                     f"{args.size} size: {args.commands:,} commands per phase, {args.partitions} partitions, "
                     f"{args.tenants} tenants, processors {args.processors}, RF {args.replication_factor} / "
                     f"min.insync {args.min_insync}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
