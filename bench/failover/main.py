"""runledger failover benchmark: how long a partition is refused after its owner is SIGKILLed, and why.

Phase kills: two processors (`serve --no-api --no-projectors`) under steady load, one owner killed
at a time and restarted; per partition it owned: the gap until a successor's first accepted reply,
split into detection, fencing, queued, rebuild and first accept (bench/failover/kills.py).
Phase rebuild: a partition prefilled with N events, rebuilt in this process by the processor's own
Ownership, from offset 0 and from a derived snapshot (bench/failover/rebuild.py).
"""
from __future__ import annotations

import secrets
from dataclasses import replace
import tempfile
from pathlib import Path

from bench.failover.args import TARGET_S, parse_args
from bench.failover.kills import Takeover, kills_phase
from bench.lib import cli
from bench.lib.measure import TOO_SHORT, percentile
from bench.lib.report import Report
from bench.lib.topics import bench_settings, delete_topics
from infra.adapters import kafka
from infra.adapters.eventlog.kafka import KafkaLog

log = cli.logger("bench failover")
MIN_TAKEOVERS = 5  # fewer takeovers than this give no pass: a p50 and max of so few are indications
SPLITS = ("gap_s", "detection_s", "fencing_s", "queued_s", "rebuild_s", "first_accept_s")


def seconds(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "never"
    never = f", {len(values) - len(seen)} never" if len(seen) < len(values) else ""
    return f"p50 {percentile(seen, 50):.2f} s, max {max(seen):.2f} s (n={len(seen)}{never})"


def report_kills(report: Report, takeovers: list[Takeover], args) -> None:
    for name in SPLITS:
        values = [getattr(t, name) for t in takeovers]
        label = name.removesuffix("_s").replace("_", " ")
        if name == "gap_s":
            seen = [v for v in values if v is not None]
            ok = bool(seen) and len(seen) == len(values) and max(seen) <= TARGET_S
            report.check("kills", "kill → successor accepts", seconds(values), f"max ≤ {TARGET_S:g} s", ok)
            if ok and len(seen) < MIN_TAKEOVERS:  # one slow takeover is a MISS; a pass needs a few
                report.rows[-1] = replace(report.rows[-1], verdict=TOO_SHORT)
        else:
            report.info("kills", label, seconds(values))
    report.data["takeovers"] = [vars(t) for t in takeovers]
    if len(takeovers) < MIN_TAKEOVERS:
        report.notes.append(f"only {len(takeovers)} takeovers: p50 and max of so few are indications, not a "
                            "distribution")


def processor_env(args) -> dict[str, str | None]:
    extra: dict[str, str | None] = {"RUNLEDGER_DATABASE_URL": args.database_url}
    if args.session_timeout_ms is not None:
        extra["RUNLEDGER_SESSION_TIMEOUT_MS"] = str(args.session_timeout_ms)
    if args.snapshot_every is not None:
        extra["RUNLEDGER_SNAPSHOT_EVERY"] = str(args.snapshot_every)
    return extra


async def main_async(args) -> Report:
    report = Report()
    prefix = "benchfo" + secrets.token_hex(4)
    settings = bench_settings(args.bootstrap, prefix, args.partitions, secrets.token_urlsafe(48),
                              args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="rlbench-failover-"))
    await kafka.ensure_topics(settings)
    floor, session = await KafkaLog(settings).session_floor_ms(), args.session_timeout_ms or settings.session_timeout_ms
    report.info("kills", "session timeout (broker floor)", f"{max(session, floor or 0):,} ms ({floor} ms)")
    if floor is not None and floor > session:
        report.notes.append(f"the broker's group.min.session.timeout.ms ({floor} ms) is above the session timeout "
                            f"asked for ({session} ms): the processors join with {floor} ms (a stack started before "
                            "infra/local/stack.sh set 1000 ms keeps 6000 ms until it is restarted)")
    try:
        if "kills" in args.only:
            takeovers = await cli.guarded(report, "kills", kills_phase(settings, workdir, processor_env(args),
                                                                       args, log))
            if takeovers is not None:
                report_kills(report, takeovers, args)
        if "rebuild" in args.only:
            from bench.failover.rebuild import rebuild_phase
            await cli.guarded(report, "rebuild", rebuild_phase(args, report, log))
    finally:
        if not args.keep:
            await delete_topics(args.bootstrap, [prefix])
    report.notes.append(f"work directory (processor logs): {workdir}")
    return report


def describe(args) -> str:
    return (f"{args.size} size: {args.kills} kills, {args.partitions} partitions, {args.rate:g} commands/s per "
            f"partition, session timeout {args.session_timeout_ms or 'default'} ms, "
            f"rebuild sizes {args.rebuild_sizes}")


def main(argv: list[str] | None = None) -> int:
    return cli.run("runledger failover", parse_args(argv), main_async, describe)
