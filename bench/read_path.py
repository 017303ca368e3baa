#!/usr/bin/env python
"""runledger read-path benchmark: projector catch-up, rebuild and steady-state lag, in one run.

Everything runs against one Kafka broker and one PostgreSQL (infra/local/stack.sh), on a fresh
topic set named after a unique prefix; ClickHouse is chdb, opened once in this process.

  1. prefill    build command envelopes exactly as the API does (commands.intake.command_envelope
                over infra.workload's realistic mix), produce them to <prefix>.commands and run a
                CommandProcessor in this process until every command has a reply and at least
                --events events are appended (6 partitions by default).
  2. baseline   a raw aiokafka read (read_committed) + json decode of the same events, and the
                same plus chain verification (ChainVerifier: canonical JSON + SHA-256 per event): the
                ceiling of any projector written in Python on this machine.
  3. catch-up   one projector at a time (runs, approvals: PostgreSQL; audit, cost: chdb), a
                ProjectorRunner from offset 0, timed from its start until it has applied every
                event (confirmed with queries.lag.projector_lag = 0). Start-up (consumer start,
                group join, positions) is included and also shown apart.
  4. rebuild    projectors.rebuild.replay_into a fresh generation, for runs and for audit.
  5. steady     a CommandProcessor in a child process, a load driver in another (commands built
                beforehand, sent open-loop on a timer: command i goes at t0 + i/rate, late
                sends are reported, never skipped), and the four projectors in this process
                (as `serve` runs them). For each rate (--low-rates first, then --rate, in
                events/s; the command rate comes from the events/command measured in the prefill):
                  * every 100 ms: lag per projector = end offsets - stored positions (events),
                    and seconds behind = now - recorded_at of the last applied event when
                    behind (queries/lag.py's definitions, one long-lived consumer);
                  * end-to-end lag of each event of one probe tenant per partition = when it
                    became visible in the read model - its recorded_at. PostgreSQL: the probes'
                    heads are polled every --probe-ms (an upper bound, up to one poll late).
                    ClickHouse: noted in this process as each batch's inserts return (chdb
                    serialises every statement, so polling it slows the projectors it measures;
                    --ch-observe poll does it anyway, and reports what the polls cost).
                  * optionally (--py-spy) a sampling profile of this process over the window.
                The probes' events are read back from Kafka afterwards. Warm-up seconds are
                excluded; the system is drained before the next rate runs.

If a catch-up or rebuild target is missed, the catch-up of --profile-names is run once more under
cProfile (on throw-away read models, chdb called inline so its time shows) and the top functions
are printed. Timings are only reported: missed targets never change the exit status; errors
exit 1. The code under test is printed with the results (commit, uncommitted files).
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import cProfile
import io
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import secrets
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import ReportBase, Row, children_of, cpu_seconds  # noqa: E402

from aiokafka import TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from tqdm import tqdm  # noqa: E402

from commands.auth import Principal  # noqa: E402
from commands.intake import command_envelope  # noqa: E402
from infra import kafka  # noqa: E402
from infra.settings import Settings  # noqa: E402
from infra.workload import workload  # noqa: E402
from schemas.envelope import parse_iso  # noqa: E402

TARGETS = {"pg_events_s": 30_000, "ch_events_s": 100_000, "lag_p99_ms": 250.0, "rate_share": 0.95}
PG_NAMES, CH_NAMES = ("runs", "approvals"), ("audit", "cost")


# ------------------------------------------------------------------------------ utilities

def log(message: str) -> None:
    print(f"[read-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "never seen" if math.isinf(value) else f"{value:,.0f}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU used over a window, as cores: the whole machine and named process groups."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = {k: v for k, v in groups.items() if v}
        self.wall = time.perf_counter()
        self.machine = machine_jiffies()
        self.start = {k: self.used(v) for k, v in self.groups.items()}

    @staticmethod
    def used(pids: list[int]) -> float:
        return sum(cpu_seconds(p) or 0.0 for p in pids)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        busy0, total0 = self.machine
        busy1, total1 = machine_jiffies()
        cores = os.cpu_count() or 1
        out = {"machine": cores * (busy1 - busy0) / max(1, total1 - total0)}
        for name, pids in self.groups.items():
            out[name] = (self.used(pids) - self.start[name]) / wall if wall > 0 else 0.0
        out["other processes"] = max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
        return out


def fmt_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


class Report(ReportBase):
    def info(self, phase: str, metric: str, measured: str) -> None:
        self.rows.append(Row(phase, metric, measured))

    def check(self, phase: str, metric: str, measured: str, target: str, ok: bool | None) -> None:
        self.rows.append(Row(phase, metric, measured, target,
                             "n/a" if ok is None else ("met" if ok else "MISSED")))

    def missed(self, phase_prefix: str) -> list[Row]:
        return [r for r in self.rows if r.phase.startswith(phase_prefix) and r.verdict == "MISSED"]


# ------------------------------------------------------------------------------ settings, workload

def settings_kwargs(args: argparse.Namespace, prefix: str, secret: str) -> dict[str, Any]:
    # kafka_bootstrap and database_url have validation aliases: passed by field name they are
    # silently ignored and the developer defaults win, so pass the aliases (and check below).
    return {"RUNLEDGER_KAFKA_BOOTSTRAP": args.bootstrap, "RUNLEDGER_DATABASE_URL": args.database_url,
            "topic_prefix": prefix, "partitions": args.partitions, "jwt_secret": secret}


def make_settings(kwargs: dict[str, Any]) -> Settings:
    settings = Settings(**kwargs)
    if (settings.kafka_bootstrap, settings.database_url) != (kwargs["RUNLEDGER_KAFKA_BOOTSTRAP"],
                                                            kwargs["RUNLEDGER_DATABASE_URL"]):
        raise RuntimeError("settings did not take the bench broker/database")
    return settings


def spread_tenants(count: int, partitions: int, tag: str) -> list[str]:
    """Tenant ids spread evenly over the partitions by Kafka's key partitioner."""
    per = math.ceil(count / partitions)
    taken: dict[int, int] = {p: 0 for p in range(partitions)}
    chosen, i = [], 0
    while len(chosen) < count:
        tenant = f"rb-{tag}-{i:04d}"
        p = kafka.partition_for(tenant, partitions)
        if taken[p] < per:
            taken[p] += 1
            chosen.append(tenant)
        i += 1
    return chosen


def probe_tenants(tenants: list[str], partitions: int) -> list[str]:
    """The first tenant of each partition."""
    first: dict[int, str] = {}
    for t in tenants:
        first.setdefault(kafka.partition_for(t, partitions), t)
    return [first[p] for p in sorted(first)]


COMMANDS_PER_RUN = 18.65  # infra.workload's mix, measured; only sizes the generated workload


def build_commands(tenants: list[str], count: int, seed: int, progress: bool, desc: str) -> list[dict]:
    """`count` command envelopes of infra.workload's mix, built as the API builds them."""
    runs = math.ceil(count / (COMMANDS_PER_RUN * len(tenants)) * 1.1) + 1
    steps = workload(tenants, runs, seed=seed)
    while len(steps) < count:
        runs *= 2
        steps = workload(tenants, runs, seed=seed)
    return [command_envelope(Principal(s.tenant, s.subject, s.roles), json.dumps(s.body).encode(), None, None, None)
            for s in tqdm(steps[:count], desc=desc, unit="cmd", disable=not progress, leave=False)]


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every)


# ------------------------------------------------------------------------------ kafka helpers

def event_tps(settings: Settings, topic: str | None = None) -> list[TopicPartition]:
    return [TopicPartition(topic or settings.events_topic, p) for p in range(settings.partitions)]


async def read_range(settings: Settings, topic: str, start: dict[int, int] | None,
                     on_record: Callable[[Any], None], desc: str, progress: bool) -> int:
    """Read committed records of topic from start offsets (default 0) to the current end."""
    consumer = kafka.reader(settings)
    await consumer.start()
    try:
        tps = event_tps(settings, topic)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        remaining = {tp for tp in tps if ends[tp] > (start or {}).get(tp.partition, 0)}
        count = 0
        with tqdm(desc=desc, unit="rec", disable=not progress, leave=False) as bar:
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
                for tp, records in batches.items():
                    for r in records:
                        if r.offset < ends[tp]:
                            on_record(r)
                            count += 1
                    bar.update(len(records))
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        return count
    finally:
        await consumer.stop()


class EndOffsets:
    """One long-lived read_committed consumer for log end offsets (cheaper than a new one per call)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.consumer = kafka.reader(settings)

    async def start(self) -> "EndOffsets":
        await self.consumer.start()
        return self

    async def __call__(self, topic: str | None = None) -> dict[int, int]:
        ends = await self.consumer.end_offsets(event_tps(self.settings, topic))
        return {tp.partition: o for tp, o in ends.items()}

    async def stop(self) -> None:
        await self.consumer.stop()


# ------------------------------------------------------------------------------ 1. prefill

async def prefill(args, settings: Settings, tenants: list[str], report: Report) -> dict:
    from commands.processor import CommandProcessor

    processor = CommandProcessor(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop), name="prefill-processor")
    try:
        await wait_for(lambda: len(processor.owners) == settings.partitions or task.done(), 120,
                       "the processor to own every partition")
        producer = kafka.command_producer(settings)
        await producer.start()
        try:
            sent, seed, ratio, started = 0, args.seed, 1.1, time.perf_counter()
            while processor.stats["events"] < args.events:
                count = math.ceil((args.events - processor.stats["events"]) / ratio * 1.02)
                commands = build_commands(tenants, count, seed, args.progress, f"building commands (seed {seed})")
                seed += 1
                for c in tqdm(commands, desc="producing commands", unit="cmd", disable=not args.progress, leave=False):
                    await producer.send(settings.commands_topic, kafka.dumps(c), key=c["tenant_id"].encode())
                await producer.flush()
                sent += len(commands)
                await follow_processor(processor, task, sent, args)
                ratio = processor.stats["events"] / max(1, processor.stats["commands"])
            elapsed = time.perf_counter() - started
        finally:
            await producer.stop()
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()
    statuses: dict[str, int] = {}

    def count_reply(record) -> None:
        status = json.loads(record.value)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    replies = await read_range(settings, settings.replies_topic, None, count_reply, "reading replies", args.progress)
    result = {"commands": sent, "events": processor.stats["events"], "replies": replies, "statuses": statuses,
              "events_per_command": processor.stats["events"] / sent, "seconds": elapsed}
    if replies != sent:
        report.errors.append(f"prefill: {sent} commands but {replies} replies")
    if set(statuses) - {"accepted"}:
        report.errors.append(f"prefill: the all-valid workload got replies {statuses}")
    report.info("prefill", "commands → events appended (in-process CommandProcessor)",
                f"{sent:,} → {result['events']:,} ({result['events_per_command']:.3f} events/command, "
                f"{len(tenants)} tenants, {settings.partitions} partitions, replies {statuses})")
    report.info("prefill", "processor rate incl. command building (events/s)", fmt_rate(result["events"] / elapsed))
    return result


async def follow_processor(processor, task: asyncio.Task, sent: int, args) -> None:
    """Wait until the processor has replied to `sent` commands, showing progress."""
    last, last_change = processor.stats["commands"], time.monotonic()
    with tqdm(total=sent, initial=last, desc="processor (commands replied)", unit="cmd",
              disable=not args.progress, leave=False) as bar:
        while processor.stats["commands"] < sent:
            if task.done():
                raise RuntimeError(f"the processor stopped: {task.exception()!r}")
            if processor.broken:
                raise RuntimeError(f"the processor broke: {processor.broken}")
            now = processor.stats["commands"]
            bar.update(now - last)
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > args.stall_s:
                raise RuntimeError(f"no command processed for {args.stall_s}s ({now}/{sent})")
            await asyncio.sleep(0.2)
        bar.update(processor.stats["commands"] - last)


# ------------------------------------------------------------------------------ 2. baselines

async def baselines(args, settings: Settings, report: Report) -> int:
    from projectors.rebuild import verified
    from schemas.chain import ChainVerifier

    sizes = [0]
    started = time.perf_counter()
    count = await read_range(settings, settings.events_topic, None,
                             lambda r: (json.loads(r.value), sizes.__setitem__(0, sizes[0] + len(r.value))),
                             "raw read + decode", args.progress)
    raw_s = time.perf_counter() - started
    heads: dict[str, ChainVerifier] = {}
    started = time.perf_counter()
    await read_range(settings, settings.events_topic, None, lambda r: verified(r.partition, r, heads),
                     "raw read + decode + verify", args.progress)
    verify_s = time.perf_counter() - started
    report.data["baseline"] = {"events": count, "bytes": sizes[0], "raw_s": raw_s, "verify_s": verify_s}
    report.info("baseline", "raw aiokafka read + json decode (events/s)",
                f"{fmt_rate(count / raw_s)} ({count:,} events, {sizes[0] / count:,.0f} B/event, {raw_s:.2f} s)")
    report.info("baseline", "… + chain verify: canonical JSON + SHA-256 (events/s)",
                f"{fmt_rate(count / verify_s)} ({verify_s:.2f} s; no sink)")
    return count


# ------------------------------------------------------------------------------ 3. catch-up, 4. rebuild

@dataclass
class CatchUp:
    name: str
    events: int
    seconds: float
    startup_s: float
    first_batch: int
    sink_s: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def rate_after_startup(self) -> float:
        return (self.events - self.first_batch) / max(1e-9, self.seconds - self.startup_s)


class SinkClock:
    """Wrap projection.apply (on the instance) to add up the time spent writing to the store."""

    def __init__(self, projection):
        self.seconds = 0.0
        inner = projection.apply

        async def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        projection.apply = timed


def infra_groups(args) -> dict[str, list[int]]:
    return {"kafka": [args.broker_pid] if args.broker_pid else [], "postgres": children_of(args.postgres_pid)}


async def catch_up(args, settings: Settings, projection, total: int) -> CatchUp:
    """Run a ProjectorRunner from its stored position until it has applied `total` events."""
    from projectors.runner import ProjectorRunner
    from queries.lag import projector_lag

    runner = ProjectorRunner(settings, projection)
    sink = SinkClock(projection)
    stop = asyncio.Event()
    meter = CpuMeter({"this process": [os.getpid()], **infra_groups(args)})
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop), name=f"catch-up-{projection.name}")
    first_at, first_batch = None, 0
    try:
        deadline = time.monotonic() + args.catch_up_timeout
        while runner.applied < total:
            if task.done() or runner.failed:
                raise RuntimeError(f"{projection.name} stopped: {runner.failed or task.exception()!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{projection.name}: {runner.applied}/{total} after {args.catch_up_timeout}s")
            if first_at is None and runner.applied:
                first_at, first_batch = time.perf_counter(), runner.applied
            await asyncio.sleep(0.005)
        ended = time.perf_counter()
        cpu = meter.stop()
        while any(r.lag_events for r in await projector_lag(settings, [projection])):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{projection.name} applied everything but its lag is not 0")
            await asyncio.sleep(0.05)
            ended = time.perf_counter()
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        del projection.apply
    first_at = first_at or ended
    return CatchUp(projection.name, runner.applied, ended - started, first_at - started, first_batch,
                   sink.seconds, cpu)


async def rebuild_into_fresh(args, settings: Settings, live, total: int) -> CatchUp:
    from projectors.rebuild import replay_into

    target = await live.fresh_generation(await live.live_generation() + 1)
    sink = SinkClock(target)
    meter = CpuMeter({"this process": [os.getpid()], **infra_groups(args)})
    with tqdm(total=total, desc=f"rebuild {live.name}", unit="ev", disable=not args.progress, leave=False) as bar:
        def show(done: int, _todo: int) -> None:
            bar.n = done
            bar.refresh()
        started = time.perf_counter()
        applied = await replay_into(settings, target, show)
        seconds = time.perf_counter() - started
    return CatchUp(live.name, applied, seconds, 0.0, 0, sink.seconds, meter.stop())


def target_for(name: str) -> tuple[int, str]:
    return (TARGETS["pg_events_s"], "PostgreSQL") if name in PG_NAMES else (TARGETS["ch_events_s"], "ClickHouse/chdb")


def report_catch_up(report: Report, phase: str, what: str, result: CatchUp) -> None:
    target, store = target_for(result.name)
    detail = (f"{result.events:,} events in {result.seconds:.2f} s"
              + (f"; start-up {result.startup_s:.2f} s, then {fmt_rate(result.rate_after_startup)}/s"
                 if result.startup_s else "")
              + f"; in projection.apply {result.sink_s:.2f} s; CPU {fmt_cpu(result.cpu)}")
    report.check(phase, f"{result.name} ({store}) {what} (events/s)", f"{fmt_rate(result.rate)} ({detail})",
                 f"≥ {target:,}", result.rate >= target)


async def open_projections(settings: Settings, pool, ch, prefix: str | None = None) -> dict[str, Any]:
    from projectors.approvals import ApprovalsProjection
    from projectors.audit import AuditProjection
    from projectors.cost import CostProjection
    from projectors.runs import RunsProjection

    prefix = prefix or settings.topic_prefix
    return {"runs": await RunsProjection(pool, prefix).open(),
            "approvals": await ApprovalsProjection(pool, prefix).open(),
            "audit": await AuditProjection(ch, prefix).open(),
            "cost": await CostProjection(ch, prefix).open()}


async def catch_up_phase(args, settings, projections: dict, total: int, report: Report) -> None:
    for name, projection in projections.items():
        log(f"catch-up: {name} from offset 0 over {total:,} events")
        result = await catch_up(args, settings, projection, total)
        report.data.setdefault("catch_up", {})[name] = result.__dict__ | {"rate": result.rate}
        report_catch_up(report, "catch-up", "from start to lag 0", result)
    for name in ("runs", "audit"):
        log(f"rebuild: replay_into a fresh {name} generation")
        result = await rebuild_into_fresh(args, settings, projections[name], total)
        report.data.setdefault("rebuild", {})[name] = result.__dict__ | {"rate": result.rate}
        report_catch_up(report, "rebuild", "replay_into a fresh generation", result)


# ------------------------------------------------------------------------------ 5. steady state: children

def processor_child(kwargs: dict, ready, stop, results) -> None:
    """Child process: a CommandProcessor until `stop` is set; its stats go to `results`."""
    asyncio.run(_processor_child(kwargs, ready, stop, results))


async def _processor_child(kwargs: dict, ready, stop, results) -> None:
    import logging

    from commands.processor import CommandProcessor

    logging.basicConfig(level="WARNING")
    settings = make_settings(kwargs)
    processor = CommandProcessor(settings)
    halt = asyncio.Event()
    task = asyncio.create_task(processor.run(halt))
    await wait_for(lambda: len(processor.owners) == settings.partitions or task.done(), 300,
                   "the processor to own every partition")
    ready.set()
    while not stop.is_set() and not task.done():
        await asyncio.sleep(0.1)
    halt.set()
    await asyncio.gather(task, return_exceptions=True)
    results.put({**processor.stats, "broken": processor.broken, "pid": os.getpid()})


def driver_child(kwargs: dict, tenants: list[str], seed: int, rate: float, count: int, conn) -> None:
    """Child process: build `count` commands, then on "go" send command i at t0 + i/rate."""
    asyncio.run(_driver_child(kwargs, tenants, seed, rate, count, conn))


async def _driver_child(kwargs: dict, tenants: list[str], seed: int, rate: float, count: int, conn) -> None:
    settings = make_settings(kwargs)
    commands = build_commands(tenants, count, seed, False, "")
    values = [(kafka.dumps(c), c["tenant_id"].encode()) for c in commands]
    producer = kafka.command_producer(settings)
    await producer.start()
    try:
        conn.send(("ready", len(values)))
        conn.recv()  # "go"
        start_wall, start = time.time(), time.perf_counter()
        slips: list[float] = []
        i = 0
        while i < len(values):
            now = time.perf_counter() - start
            while i < len(values) and i / rate <= now:
                slips.append(now - i / rate)
                value, key = values[i]
                await producer.send(settings.commands_topic, value, key=key)
                i += 1
            if i < len(values):
                await asyncio.sleep(max(0.0, i / rate - (time.perf_counter() - start)))
        sent_s = time.perf_counter() - start
        await producer.flush()
    finally:
        await producer.stop()
    conn.send({"sent": len(values), "start_wall": start_wall, "sent_s": sent_s,
               "slip_p50_ms": percentile(slips, 50) * 1000, "slip_p99_ms": percentile(slips, 99) * 1000,
               "slip_max_ms": max(slips) * 1000, "pid": os.getpid()})


# ------------------------------------------------------------------------------ 5. steady state: observers

class ChTimer:
    """The time observers' chdb calls take, lock wait included (chdb runs one statement at a time)."""

    def __init__(self, ch):
        self.ch, self.seconds, self.calls = ch, 0.0, 0

    async def query(self, sql: str, params: dict | None = None) -> list[dict]:
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(self.ch.query, sql, params)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


class ApplyWatch:
    """ClickHouse without reading chdb: note each batch's new position and the probes' heads as the
    projection's apply returns (rows and `progress` are then inserted, i.e. visible to readers).

    chdb runs one statement at a time for the whole process, so polling it competes with the
    projectors it measures (see --ch-observe poll); this observes the same moments for free."""

    def __init__(self, projections: dict[str, Any], probes: list[str]):
        self.probes = set(probes)
        self.positions: dict[str, dict[int, tuple[int, str | None]]] = {n: {} for n in CH_NAMES}
        self.prober: "HeadProber | None" = None
        for name in CH_NAMES:
            self.install(name, projections[name])

    async def start(self, projections: dict[str, Any]) -> "ApplyWatch":
        for name in CH_NAMES:
            stored = await projections[name].positions()
            self.positions[name] = {p: (pos.next_offset, pos.last_recorded_at) for p, pos in stored.items()}
        return self

    def install(self, name: str, projection) -> None:
        inner = projection.apply

        async def watched(batches: list) -> None:
            await inner(batches)
            at = time.time()
            for b in batches:
                last = b.envelopes[-1]["recorded_at"] if b.envelopes else self.positions[name].get(b.partition, (0, None))[1]
                self.positions[name][b.partition] = (b.next_offset, last)
                if self.prober:
                    heads = {e["tenant_id"]: e["chain_seq"] for e in b.envelopes if e["tenant_id"] in self.probes}
                    for tenant, seq in heads.items():
                        self.prober.note(at, name, tenant, seq)
        projection.apply = watched


class BatchLog:
    """Wrap each projection's apply (outermost) to log every stored batch: (end, name, events, seconds)."""

    def __init__(self, projections: dict[str, Any]):
        self.batches: list[tuple[float, str, int, float]] = []
        self.projections = projections
        for name, projection in projections.items():
            self.install(name, projection)

    def install(self, name: str, projection) -> None:
        inner = projection.apply

        async def logged(batches: list) -> None:
            started = time.perf_counter()
            await inner(batches)
            self.batches.append((time.time(), name, sum(len(b.envelopes) for b in batches), time.perf_counter() - started))
        projection.apply = logged

    def remove(self) -> None:
        for projection in self.projections.values():
            projection.__dict__.pop("apply", None)


class ChdbCalls:
    """Time every chdb statement of this process by call site: how long it held chdb's lock, and
    how long it waited for it (the adapter runs one statement at a time)."""

    def __init__(self, ch):
        self.ch = ch
        self.calls: list[tuple[float, str, float, float]] = []  # (end, site, held, waited)
        inner = ch._call

        def timed(fn):
            method = sys._getframe(1)  # the adapter's query/insert/command
            site = method.f_back
            owner = site.f_locals.get("self")
            table = method.f_locals.get("table")
            label = (f"{type(owner).__name__}.{site.f_code.co_name}" if owner is not None and site.f_code.co_name
                     not in ("run",) else f"{method.f_code.co_name} via to_thread")
            if table:
                label += f" → {table.split('.')[-1]}"
            held = [0.0]

            def run(client):
                started = time.perf_counter()
                try:
                    return fn(client)
                finally:
                    held[0] = time.perf_counter() - started
            started = time.perf_counter()
            try:
                return inner(run)
            finally:
                self.calls.append((time.time(), label, held[0], time.perf_counter() - started - held[0]))
        ch._call = timed

    def remove(self) -> None:
        self.ch.__dict__.pop("_call", None)

    def summary(self, t0: float, t1: float, top: int = 7) -> str:
        calls = [c for c in self.calls if t0 <= c[0] <= t1]
        by: dict[str, list[float]] = {}
        for _, label, held, _ in calls:
            by.setdefault(label, []).append(held)
        held_total = sum(c[2] for c in calls)
        waited = sum(c[3] for c in calls) / max(1, len(calls))
        parts = [f"{label} {len(v)}× {1000 * sum(v) / len(v):.1f} ms"
                 for label, v in sorted(by.items(), key=lambda kv: -sum(kv[1]))[:top]]
        return (f"lock held {100 * held_total / (t1 - t0):.0f}% of the window, {len(calls):,} statements, "
                f"mean wait {1000 * waited:.1f} ms; " + "; ".join(parts))


class LagSampler:
    """Every `every` s: per projector, events behind the log end and seconds behind (as queries/lag).

    A cheaper equivalent of queries.lag.projector_lag: one long-lived consumer for the end offsets,
    one PostgreSQL query and one ClickHouse query for the four projectors' stored positions."""

    def __init__(self, ends: EndOffsets, projections: dict[str, Any], pool, ch, every: float = 0.1,
                 watch: ApplyWatch | None = None):
        self.ends, self.projections, self.pool, self.every, self.watch = ends, projections, pool, every, watch
        self.ch = ChTimer(ch)
        self.samples: list[tuple[float, str, int, float]] = []  # (time, projector, events, ms)
        self.pg_sql = " UNION ALL ".join(
            f"SELECT '{n}', partition, next_offset, last_recorded_at FROM {projections[n].schema}.positions"
            for n in PG_NAMES)
        self.ch_sql = " UNION ALL ".join(
            f"SELECT '{n}' AS p, partition, max(next_offset) AS o, argMax(last_recorded_at, next_offset) AS at "
            f"FROM {projections[n].db}.progress WHERE tenant_id = '' GROUP BY partition" for n in CH_NAMES)

    async def positions(self) -> dict[str, dict[int, tuple[int, str | None]]]:
        async with self.pool.connection() as conn:
            pg = await (await conn.execute(self.pg_sql)).fetchall()
        out: dict[str, dict[int, tuple[int, str | None]]] = {n: {} for n in self.projections}
        for name, partition, offset, at in pg:
            out[name][partition] = (offset, at)
        if self.watch:
            return {**out, **{n: dict(self.watch.positions[n]) for n in CH_NAMES}}
        for r in await self.ch.query(self.ch_sql):
            out[r["p"]][r["partition"]] = (r["o"], r["at"] or None)
        return out

    async def sample(self) -> dict[str, int]:
        ends = await self.ends()
        positions = await self.positions()
        now = time.time()
        behind_by = {}
        for name, pos in positions.items():
            behind, ms = 0, 0.0
            for partition, end in ends.items():
                offset, at = pos.get(partition, (0, None))
                lag = max(0, end - offset)
                behind += lag
                if lag and at:
                    ms = max(ms, (now - parse_iso(at).timestamp()) * 1000)
            self.samples.append((now, name, behind, ms))
            behind_by[name] = behind
        return behind_by

    async def run(self, stop: asyncio.Event) -> None:
        tick = time.perf_counter()
        while not stop.is_set():
            await self.sample()
            tick += self.every
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))


class HeadProber:
    """Poll the probe tenants' chain heads in every read model; keep (time, seq) when they move."""

    def __init__(self, projections: dict[str, Any], ch, database_url: str, probes: list[str],
                 every: float, ch_every: int, watch: ApplyWatch | None = None):
        self.projections, self.ch, self.url, self.probes, self.every = projections, ch, database_url, probes, every
        self.ch_every = ch_every  # chdb serialises every statement: poll it less often than PostgreSQL
        self.watch = watch
        if watch:
            watch.prober = self
        self.ch = ChTimer(ch)
        self.seen: dict[tuple[str, str], list[tuple[float, int]]] = {}
        self.polls = 0

    def note(self, at: float, name: str, tenant: str, seq: int) -> None:
        history = self.seen.setdefault((name, tenant), [])
        if not history or seq > history[-1][1]:
            history.append((at, seq))

    def pg_sql(self) -> str:
        return " UNION ALL ".join(f"SELECT '{n}', tenant_id, chain_seq FROM {self.projections[n].schema}.heads "
                                  "WHERE tenant_id = ANY(%(t)s)" for n in PG_NAMES)

    def ch_sql(self) -> str:
        return " UNION ALL ".join(f"SELECT '{n}' AS p, tenant_id AS t, max(chain_seq) AS s "
                                  f"FROM {self.projections[n].db}.progress "
                                  "WHERE tenant_id IN {t:Array(String)} GROUP BY tenant_id" for n in CH_NAMES)

    async def run(self, stop: asyncio.Event) -> None:
        import psycopg

        pg_sql, ch_sql = self.pg_sql(), self.ch_sql()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            tick = time.perf_counter()
            while not stop.is_set():
                at = time.time()
                for name, tenant, seq in await (await conn.execute(pg_sql, {"t": self.probes})).fetchall():
                    self.note(at, name, tenant, seq)
                if not self.watch and self.polls % self.ch_every == 0:
                    at = time.time()
                    for row in await self.ch.query(ch_sql, {"t": self.probes}):
                        self.note(at, row["p"], row["t"], row["s"])
                self.polls += 1
                tick += self.every
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))

    def visible_at(self, name: str, tenant: str, seq: int) -> float:
        history = self.seen.get((name, tenant), [])
        i = bisect.bisect_left([s for _, s in history], seq)
        return history[i][0] if i < len(history) else math.inf


# ------------------------------------------------------------------------------ 5. steady state: windows

@dataclass
class SteadyContext:
    args: argparse.Namespace
    settings: Settings
    kwargs: dict
    projections: dict[str, Any]
    pool: Any
    ch: Any
    tenants: list[str]
    probes: list[str]
    events_per_command: float
    ends: EndOffsets
    watch: ApplyWatch | None
    batches: BatchLog
    chdb: ChdbCalls
    processor_pid: int
    groups: dict[str, list[int]]


async def steady_phase(args, settings, kwargs, projections, pool, ch, tenants, events_per_command, report) -> None:
    from projectors.runner import ProjectorRunner

    spawn = mp.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    child = spawn.Process(target=processor_child, args=(kwargs, ready, stop, results), name="rb-processor")
    child.start()
    probes = probe_tenants(tenants, settings.partitions)
    watch = await ApplyWatch(projections, probes).start(projections) if args.ch_observe == "watch" else None
    batches, chdb = BatchLog(projections), ChdbCalls(ch)
    runners = [ProjectorRunner(settings, p) for p in projections.values()]
    halt = asyncio.Event()
    tasks = [asyncio.create_task(r.run(halt), name=f"projector-{r.projection.name}") for r in runners]
    ends = await EndOffsets(settings).start()
    try:
        log("steady: starting the processor child (it replays the prefilled log first)")
        await wait_for(lambda: ready.is_set() or not child.is_alive(), 600, "the processor child", 0.2)
        if not child.is_alive():
            raise RuntimeError("the processor child died during start-up")
        ctx = SteadyContext(args, settings, kwargs, projections, pool, ch, tenants, probes, events_per_command, ends,
                            watch, batches, chdb, child.pid, steady_groups(args, child.pid))
        await drain(ctx, runners, 120)
        for n, rate in enumerate(r for r in (*args.low_rates, args.rate) if r):
            await window(ctx, runners, rate, args.seed + 1000 + n, report)
    finally:
        stop.set()
        halt.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        batches.remove()
        chdb.remove()
        await ends.stop()
        child.join(60)
        stats = results.get(timeout=5) if not results.empty() else None
        if child.is_alive():
            child.terminate()
        if stats and stats.get("broken"):
            report.errors.append(f"steady: processor partitions broke: {stats['broken']}")


def steady_groups(args, processor_pid: int) -> dict[str, list[int]]:
    return {"projectors (this process)": [os.getpid()], "processor": [processor_pid], **infra_groups(args)}


async def drain(ctx: SteadyContext, runners, timeout_s: float) -> bool:
    """Wait until the log stops growing and every projector's lag is 0."""
    sampler = LagSampler(ctx.ends, ctx.projections, ctx.pool, ctx.ch, watch=ctx.watch)
    deadline = time.monotonic() + timeout_s
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        failed = [r.failed for r in runners if r.failed]
        if failed:
            raise RuntimeError(f"a projector stopped: {failed}")
        ends = await ctx.ends()
        if ends != last:
            last, still_since = ends, time.monotonic()
        behind = await sampler.sample()
        if not any(behind.values()) and time.monotonic() - still_since > 1.0:
            return True
        await asyncio.sleep(0.1)
    return False


async def window(ctx: SteadyContext, runners, rate_events: float, seed: int, report: Report) -> None:
    args = ctx.args
    phase = f"steady @ {rate_events:,.0f} ev/s"
    rate_cmd = rate_events / ctx.events_per_command
    count = math.ceil(rate_cmd * (args.warmup + args.duration))
    log(f"{phase}: building {count:,} commands in the driver ({rate_cmd:,.0f} commands/s for "
        f"{args.warmup:.0f}+{args.duration:.0f} s)")
    spawn = mp.get_context("spawn")
    parent, child_end = spawn.Pipe()
    driver = spawn.Process(target=driver_child, args=(ctx.kwargs, ctx.tenants, seed, rate_cmd, count, child_end),
                           name="rb-driver")
    driver.start()
    try:
        ready = await asyncio.to_thread(parent.recv)
        start_events, start_replies = await ctx.ends(), await ctx.ends(ctx.settings.replies_topic)
        stop = asyncio.Event()
        sampler = LagSampler(ctx.ends, ctx.projections, ctx.pool, ctx.ch, 0.1, ctx.watch)
        prober = HeadProber(ctx.projections, ctx.ch, ctx.settings.database_url, ctx.probes,
                            args.probe_ms / 1000, args.ch_probe_every, ctx.watch)
        observers = [asyncio.create_task(sampler.run(stop)), asyncio.create_task(prober.run(stop))]
        log(f"{phase}: go ({ready[1]:,} commands)")
        parent.send("go")
        await asyncio.sleep(args.warmup)
        spy = await start_py_spy(args, phase, rate_events)
        meter = CpuMeter({**ctx.groups, "driver": [driver.pid], **({"py-spy": [spy[0].pid]} if spy else {})})
        calls0 = (sampler.ch.seconds + prober.ch.seconds, sampler.ch.calls + prober.ch.calls)
        sent = await asyncio.to_thread(parent.recv)
        cpu = meter.stop()
        calls = (sampler.ch.seconds + prober.ch.seconds - calls0[0], sampler.ch.calls + prober.ch.calls - calls0[1])
        log(f"{phase}: all commands sent; draining")
        drained = await drain(ctx, runners, args.drain_timeout)
        polls = prober.polls  # let the probe see the drained state before it stops
        await wait_for(lambda: prober.polls >= polls + 2, 30, "a last probe poll")
        stop.set()
        await asyncio.gather(*observers)
    finally:
        driver.join(30)
        if driver.is_alive():
            driver.terminate()
    t0 = sent["start_wall"] + args.warmup
    t1 = sent["start_wall"] + sent["sent_s"]
    await summarise(ctx, phase, rate_events, rate_cmd, sent, cpu, drained, (t0, t1),
                    start_events, start_replies, sampler, prober, calls, report)
    if spy:
        await spy[0].wait()
        text = py_spy_summary(spy[1], f"{phase}: py-spy of the projector process over the window")
        report.data.setdefault("py_spy", {})[phase] = text
        print(text, file=sys.stderr)


async def summarise(ctx, phase, rate_events, rate_cmd, sent, cpu, drained, span, start_events, start_replies,
                    sampler: LagSampler, prober: HeadProber, calls: tuple[float, int], report: Report) -> None:
    t0, t1 = span
    in_window, probe_events, statuses = [0], [], {}
    probes = set(ctx.probes)

    def on_event(record) -> None:
        env = json.loads(record.value)
        at = parse_iso(env["recorded_at"]).timestamp()
        if t0 <= at <= t1:
            in_window[0] += 1
            if env["tenant_id"] in probes:
                probe_events.append((env["tenant_id"], env["chain_seq"], at))

    def on_reply(record) -> None:
        status = json.loads(record.value)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    await read_range(ctx.settings, ctx.settings.events_topic, start_events, on_event, "reading the window", False)
    await read_range(ctx.settings, ctx.settings.replies_topic, start_replies, on_reply, "reading replies", False)
    seconds = t1 - t0
    appended = in_window[0] / seconds
    data = {"rate_events": rate_events, "rate_commands": rate_cmd, "driver": sent, "cpu": cpu, "drained": drained,
            "seconds": seconds, "events": in_window[0], "appended_s": appended, "replies": statuses,
            "probe_polls": prober.polls, "lag": {}}
    report.check(phase, "events appended/s (recorded_at inside the window)",
                 f"{fmt_rate(appended)} ({in_window[0]:,} in {seconds:.1f} s; offered {rate_cmd:,.0f} commands/s)",
                 f"≥ {TARGETS['rate_share'] * rate_events:,.0f}", appended >= TARGETS["rate_share"] * rate_events)
    report.info(phase, "driver: send slip p50/p99/max (ms); replies",
                f"{sent['slip_p50_ms']:.1f}/{sent['slip_p99_ms']:.1f}/{sent['slip_max_ms']:.1f}; {statuses}")
    report.info(phase, "CPU (cores) during the window", fmt_cpu(cpu) + ("" if drained else "; DID NOT DRAIN"))
    report.info(phase, "observers: lag samples taken / due; their chdb calls in the window",
                f"{sum(1 for at, n, _, _ in sampler.samples if n == 'runs' and t0 <= at <= t1)} / "
                f"{(t1 - t0) / sampler.every:.0f}; {calls[1]:,} calls, {1000 * calls[0] / max(1, calls[1]):.1f} ms "
                "each incl. waiting for the chdb lock")
    if set(statuses) - {"accepted"}:
        report.notes.append(f"{phase}: some commands were not accepted: {statuses}")
    report.info(phase, "chdb statements in the window (by call site: count × mean time holding the lock)",
                ctx.chdb.summary(t0, t1))
    data["chdb_calls"] = ctx.chdb.summary(t0, t1, top=20)
    for name in ctx.projections:
        lags = [(prober.visible_at(name, t, s) - at) * 1000 for t, s, at in probe_events]
        p50, p99 = percentile(lags, 50), percentile(lags, 99)
        unseen = sum(1 for v in lags if math.isinf(v))
        report.check(phase, f"{name}: end-to-end lag p50/p99 (ms), recorded_at → visible",
                     f"{fmt_ms(p50)} / {fmt_ms(p99)} ({len(lags):,} probe events"
                     + (f", {unseen} never seen" if unseen else "")
                     + (", noted as stored)" if name in CH_NAMES and ctx.watch else
                        f", poll {ctx.args.probe_ms * (ctx.args.ch_probe_every if name in CH_NAMES else 1):.0f} ms)"),
                     f"p99 < {TARGETS['lag_p99_ms']:.0f}", p99 < TARGETS["lag_p99_ms"])
        stored = [(n_events, secs) for at, n, n_events, secs in ctx.batches.batches if n == name and t0 <= at <= t1]
        report.info(phase, f"{name}: batches stored (per s, mean events, mean apply ms, share of window)",
                    f"{len(stored) / seconds:,.1f}/s, {sum(e for e, _ in stored) / max(1, len(stored)):,.1f} events, "
                    f"{1000 * sum(x for _, x in stored) / max(1, len(stored)):,.1f} ms, "
                    f"{100 * sum(x for _, x in stored) / seconds:.0f}%")
        samples = [(e, ms) for at, n, e, ms in sampler.samples if n == name and t0 <= at <= t1]
        behind, ms = [e for e, _ in samples], [m for _, m in samples]
        tail = [e for at, n, e, _ in sampler.samples if n == name and t1 - 1.0 <= at <= t1]
        report.check(phase, f"{name}: sampled lag p50/p99 events, p50/p99 ms behind",
                     f"{percentile(behind, 50):,.0f}/{percentile(behind, 99):,.0f} ev, "
                     f"{fmt_ms(percentile(ms, 50))}/{fmt_ms(percentile(ms, 99))} ms ({len(samples)} samples; "
                     f"last second {sum(tail) / max(1, len(tail)):,.0f} ev)",
                     f"p99 < {TARGETS['lag_p99_ms']:.0f} ms", percentile(ms, 99) < TARGETS["lag_p99_ms"])
        data.setdefault("series", {})[name] = {
            "sampled": [(round(at - t0, 3), e, round(m)) for at, n, e, m in sampler.samples if n == name],
            "e2e": [(round(at - t0, 3), round(v)) for (_, _, at), v in zip(probe_events, lags) if math.isfinite(v)]}
        data["lag"][name] = {"e2e_p50_ms": p50, "e2e_p99_ms": p99, "e2e_n": len(lags), "unseen": unseen,
                             "sampled_events_p50": percentile(behind, 50), "sampled_events_p99": percentile(behind, 99),
                             "sampled_ms_p50": percentile(ms, 50), "sampled_ms_p99": percentile(ms, 99)}
    report.data.setdefault("steady", []).append(data)


# ------------------------------------------------------------------------------ py-spy (optional)

async def start_py_spy(args, phase: str, rate: float):
    """Sample this process (all threads, on CPU or waiting for it) for the measured window."""
    if not args.py_spy:
        return None
    out = Path(args.workdir) / f"py-spy-{rate:.0f}.raw"
    proc = await asyncio.create_subprocess_exec(
        args.py_spy, "record", "-p", str(os.getpid()), "-d", str(int(args.duration)), "-r", str(args.py_spy_hz),
        "--threads",
        "--nonblocking", "--format", "raw", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return proc, out


IDLE_FRAMES = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)", "Condition.wait",
               "Connection._recv", "Event.wait", "TMonitor.run")


def py_spy_summary(path: Path, title: str, top: int = 22) -> str:
    """Per thread kind: share of samples not idle, and the frames most often on the stack."""
    from collections import Counter

    kinds: dict[str, tuple[Counter, list[int]]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        return f"{title}: no py-spy output ({error})"
    for line in lines:
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        kind = "event loop (MainThread)" if "MainThread" in frames[0] else (
            "to_thread workers (chdb calls)" if "asyncio_" in frames[0] else "other threads")
        inclusive, counts = kinds.setdefault(kind, (Counter(), [0, 0]))
        counts[0] += int(n)
        if frames[-1].startswith(IDLE_FRAMES):
            continue
        counts[1] += int(n)
        for frame in set(frames[1:]):
            if not frame.startswith(("<module>", "main (", "run (asyncio", "Runner.run", "BaseEventLoop.",
                                     "Handle._run", "Thread.", "_worker", "_WorkItem")):
                inclusive[frame] += int(n)
    out = io.StringIO()
    out.write(f"\n=== {title} ===\n")
    for kind, (inclusive, (total, busy)) in kinds.items():
        out.write(f"  {kind}: {busy:,} of {total:,} samples not idle ({100 * busy / max(1, total):.0f}%)\n")
        if kind == "other threads":
            continue
        for frame, n in inclusive.most_common(top):
            out.write(f"    {100 * n / max(1, busy):5.1f}% of busy  {frame[:120]}\n")
    return out.getvalue()


# ------------------------------------------------------------------------------ profiling

async def run_inline(fn, *args):
    """Stand-in for ClickHouseProjection.run under the profiler: the chdb work in this thread."""
    return fn(*args)


async def profile_catch_up(args, settings, pool, ch, names: list[str], total: int, report: Report) -> None:
    profiled = await open_projections(settings, pool, ch, prefix=f"{settings.topic_prefix}_prof")
    for name in names:
        projection = profiled[name]
        if name in CH_NAMES:
            projection.run = run_inline  # cProfile sees one thread; chdb runs here instead of a worker
        log(f"profile: catch-up of {name} under cProfile")
        profiler = cProfile.Profile()
        profiler.enable()
        result = await catch_up(args, settings, projection, total)
        profiler.disable()
        if args.profile_dir:
            profiler.dump_stats(str(Path(args.profile_dir) / f"read_path-{name}.prof"))
        text = profile_summary(profiler, result)
        report.data.setdefault("profiles", {})[name] = text
        print(text, file=sys.stderr)


HOT = [("runner.py", "apply"), ("runner.py", "verify"), ("chain.py", "problem_with"), ("envelope.py", "compute_hash"),
       ("rfc8785", "dumps"), ("envelope.py", "decode"), ("__init__.py", "loads"), ("pg.py", "apply"),
       ("pg.py", "execute"), ("pg.py", "bookkeeping"), ("runs.py", "statements"), ("approvals.py", "statements"),
       ("ch.py", "_apply"), ("ch.py", "live"), ("audit.py", "rows"), ("audit.py", "parents"), ("audit.py", "row"),
       ("cost.py", "rows"), ("ch.py", "ts"), ("clickhouse.py", "insert"), ("clickhouse.py", "query"),
       ("consumer.py", "getmany"), ("cursor_async.py", "execute"), ("base_events.py", "_run_once")]


def profile_summary(profiler: cProfile.Profile, result: CatchUp, top: int = 18) -> str:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0

    def label(key) -> str:
        path, line, func = key
        return f"{func} ({Path(path).name}:{line})" if path != "~" else func
    out = io.StringIO()
    out.write(f"\n=== cProfile: {result.name} catch-up, {result.events:,} events in {result.seconds:.2f} s "
              f"under the profiler; {total:.2f} s profiled ===\n  top by own time:\n")
    for key, (_, calls, own, cum, _) in sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]:
        out.write(f"  {100 * own / total:5.1f}% own {100 * cum / total:5.1f}% cum {calls:>9,}  {label(key)}\n")
    out.write("  selected functions by cumulative time:\n")
    for file_part, func in HOT:
        for key, (_, calls, own, cum, _) in entries.items():
            if key[2] == func and file_part in key[0] and cum / total >= 0.005:
                out.write(f"  {100 * cum / total:5.1f}% cum {100 * own / total:5.1f}% own {calls:>9,}  {label(key)}\n")
    return out.getvalue()


# ------------------------------------------------------------------------------ main

async def main_async(args) -> Report:
    from infra.clickhouse import ChdbClickHouse
    from infra.postgres import open_pool

    report = Report()
    prefix = f"rbench{uuid.uuid4().hex[:8]}"
    kwargs = settings_kwargs(args, prefix, secrets.token_urlsafe(48))
    settings = make_settings(kwargs)
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    args.workdir = str(workdir)
    report.data.update(prefix=prefix, workdir=str(workdir))
    log(f"topic prefix {prefix}, work dir {workdir}")
    pool = await open_pool(settings, max_size=10)
    ch = ChdbClickHouse(str(workdir / "chdb"))
    tenants = spread_tenants(args.tenants, args.partitions, prefix[-4:])
    try:
        await kafka.ensure_topics(settings)
        log(f"prefill: at least {args.events:,} events")
        pre = await prefill(args, settings, tenants, report)
        report.data["prefill"] = pre
        total = await baselines(args, settings, report)
        if total != pre["events"]:
            report.errors.append(f"the log holds {total} events, the processor appended {pre['events']}")
        projections = await open_projections(settings, pool, ch)
        await catch_up_phase(args, settings, projections, total, report)
        missed = {r.metric.split(" ")[0] for r in report.missed("catch-up") + report.missed("rebuild")}
        chosen = [n for n in args.profile_names if args.profile or n in missed]
        if chosen and (args.profile or args.profile_on_miss):
            await profile_catch_up(args, settings, pool, ch, chosen, total, report)
        if args.steady:
            await steady_phase(args, settings, kwargs, projections, pool, ch, tenants, pre["events_per_command"],
                               report)
    except Exception as error:  # noqa: BLE001
        report.errors.append(f"{type(error).__name__}: {error}")
        traceback.print_exc()
    finally:
        await pool.close()
        ch.close()
        if not args.keep:
            await cleanup(args, prefix, workdir, report)
    return report


async def cleanup(args, prefix: str, workdir: Path, report: Report) -> None:
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not delete the bench topics: {error!r}")
    try:
        await asyncio.to_thread(drop_read_models, args.database_url, prefix)
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not drop the bench schemas: {error!r}")
    shutil.rmtree(workdir, ignore_errors=True)


def drop_read_models(database_url: str, prefix: str) -> None:
    """Drop the schemas and registry rows of this run's read models (all named after its prefix)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url, autocommit=True) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                      (prefix.lower() + "%",)).fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        if conn.execute("SELECT to_regclass('public.runledger_projections')").fetchone()[0]:
            conn.execute("DELETE FROM public.runledger_projections WHERE name LIKE %s", (prefix + "%",))


def pid_from(home: str | None, name: str) -> int | None:
    try:
        return int(Path(home, name).read_text().split()[0]) if home else None
    except (OSError, ValueError, IndexError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP"), help="Kafka bootstrap")
    p.add_argument("--database-url", default=os.environ.get("RUNLEDGER_DATABASE_URL") or os.environ.get("DATABASE_URL"))
    p.add_argument("--events", type=int, default=200_000, help="events to prefill (at least)")
    p.add_argument("--quick", action="store_true", help="smoke run: ~20k events, 10 s windows")
    p.add_argument("--tenants", type=int, default=48)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=5000.0, help="steady-state target, events/s appended")
    p.add_argument("--low-rates", default="250,1000", help="lower steady rates run first, comma-separated ('' to skip)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per steady rate")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each window")
    p.add_argument("--probe-ms", type=float, default=25.0, help="end-to-end probe poll interval (PostgreSQL)")
    p.add_argument("--ch-observe", choices=["watch", "poll"], default="watch",
                   help="ClickHouse positions and probe heads: noted in-process as each batch is stored "
                        "(watch), or read from chdb's progress tables (poll; competes for chdb's lock)")
    p.add_argument("--ch-probe-every", type=int, default=2, help="with --ch-observe poll: every N-th probe tick")
    p.add_argument("--py-spy", default=None, help="path to a py-spy binary: sample the projector process "
                                                   "during each steady window and print where it spends time")
    p.add_argument("--py-spy-hz", type=int, default=25, help="py-spy samples per second (it costs CPU too)")
    p.add_argument("--no-steady", dest="steady", action="store_false")
    p.add_argument("--profile", action="store_true", help="profile the --profile-names catch-ups even if met")
    p.add_argument("--profile-names", default="runs,audit", help="projectors to profile when their target is missed")
    p.add_argument("--no-profile-on-miss", dest="profile_on_miss", action="store_false")
    p.add_argument("--profile-dir", default=None, help="also write the .prof files here")
    p.add_argument("--catch-up-timeout", type=float, default=900.0)
    p.add_argument("--drain-timeout", type=float, default=180.0)
    p.add_argument("--stall-s", type=float, default=60.0)
    p.add_argument("--stack-home", default=os.environ.get("RUNLEDGER_HOME"),
                   help="infra/local/stack.sh home, to attribute the broker's and PostgreSQL's CPU")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep topics, schemas and the chdb directory")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    if args.quick:
        for flag, value in (("events", 20_000), ("duration", 10.0), ("warmup", 3.0)):
            if f"--{flag}" not in explicit:
                setattr(args, flag, value)
    if not args.bootstrap or not args.database_url:
        p.error("give --bootstrap and --database-url (or RUNLEDGER_KAFKA_BOOTSTRAP / RUNLEDGER_DATABASE_URL)")
    args.low_rates = [float(r) for r in args.low_rates.split(",") if r.strip()]
    args.profile_names = [n.strip() for n in args.profile_names.split(",") if n.strip()]
    args.broker_pid = pid_from(args.stack_home, "kafka.pid")
    args.postgres_pid = pid_from(args.stack_home, "postgres.pid")
    return args


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} × {model}, {mem:.0f} GiB, Linux {platform.release()}, Python {platform.python_version()}"


def git_state() -> str:
    """The commit under test and any uncommitted changes to tracked files (they are measured too)."""
    import subprocess

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if os.environ.get("BENCH_CODE"):  # e.g. a `git archive` snapshot, which has no .git
        return os.environ["BENCH_CODE"]
    head = git("rev-parse", "--short", "HEAD") or "not a git checkout"
    dirty = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return head + (f" + uncommitted changes to {', '.join(line[3:] for line in dirty)}" if dirty else " (clean)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    report = asyncio.run(main_async(args))
    print()
    print(f"runledger read path — {started:%Y-%m-%d %H:%M} UTC — {machine()}")
    print(f"code: {git_state()}")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; "
          f"prefix {report.data.get('prefix')}; {args.tenants} tenants, {args.partitions} partitions")
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    for error in report.errors:
        print(f"ERROR: {error}")
    if args.json:
        args.json.write_text(json.dumps({"started": started.isoformat(), "machine": machine(), "code": git_state(),
                                         "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": [r.__dict__ for r in report.rows], "notes": report.notes,
                                         "errors": report.errors, "data": report.data}, indent=2, default=str))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
