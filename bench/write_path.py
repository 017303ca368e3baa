#!/usr/bin/env python
"""runledger write-path benchmark: one run, one broker, one table.

Phases (all against the same Kafka broker, each on fresh topics named after a unique prefix):

  1. processor   pre-produce N command envelopes (built by commands.intake.command_envelope,
                 exactly as the API builds them) to <prefix>.commands, then start the command
                 processor (`python -m infra.cli serve --no-api`, a subprocess) and read
                 <prefix>.replies until N replies are seen. Throughput is timed from the
                 first reply batch to the last one (start-up, group join, fencing and the
                 rebuild are excluded; the first batch's commands are excluded from the count
                 too); the rate including start-up is reported as well.
  2. produce     raw aiokafka ceiling: the very records the processor appended (same values,
                 keys and CloudEvents headers) produced again to a fresh topic with the same
                 partition count (idempotent, acks=all, linger 5 ms, no transactions).
  3. consume     raw aiokafka read of those records (a baseline for projector benchmarks), and
                 a read_committed read of the processor's events topic.
  4. peer        the `eventsourcing` library (PostgreSQL persistence) appending the events of
                 the same command mix with the same domain aggregates (domain.run.Run,
                 domain.budget.Budget): batch mode (one Application.save of all aggregates
                 touched by 1,000 commands, i.e. one DB transaction, like one processor batch)
                 and single mode (one save per command).
  5. http        `serve --no-projectors` (API + processor, one subprocess; optionally with the
                 projectors, or API and processor as two processes) driven open-loop at a fixed
                 rate with POST /v1/commands from one client per tenant (bench/rawhttp.py,
                 or httpx with --http-client httpx); latency is
                 measured from each command's scheduled send time (no coordinated omission).
                 The same load against bench/echo_server.py (no Kafka) gives the floor that the
                 HTTP stack and the client alone cost on this machine.

Also reported: the processor's work without Kafka (decide + seal + encode, in this process),
the CPU each process used during each measured window, and peak RSS (VmHWM) of the servers.

It only reports: missed targets never change the exit status; errors (a phase that breaks,
a rejected command in a workload that should be all-valid) exit 1.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import math
import os
import platform
import pstats
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (Child, ReportBase, Row, cpu_seconds, machine_busy_seconds,  # noqa: E402
                    proc_status_mb)

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from tqdm import tqdm  # noqa: E402

from commands.auth import authenticate, mint  # noqa: E402
from commands.intake import command_envelope  # noqa: E402
from infra import kafka  # noqa: E402
from infra.settings import Settings  # noqa: E402

TARGETS = {
    "processor_events_s": 25_000,
    "ratio_raw_produce": 0.40,
    "ratio_peer": 3.0,
    "http_p99_ms": 25.0,
}
PROJECTS = ("support", "research", "ops")


# ------------------------------------------------------------------------------ utilities

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_rss_mb(pid: int) -> float | None:
    return proc_status_mb(pid, "VmHWM")


class CpuMeter:
    """CPU used by named processes over a window (seconds of CPU per second of wall time),
    plus what everything else on the machine used meanwhile ("others": other sessions'
    brokers and benchmarks share these cores and skew every number)."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = {k: v for k, v in pids.items() if v}
        self.start_wall = time.perf_counter()
        self.start = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.start_machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.start_wall
        out = {}
        for name, pid in self.pids.items():
            end, begin = cpu_seconds(pid), self.start.get(name)
            if end is not None and begin is not None and wall > 0:
                out[name] = (end - begin) / wall
        machine = machine_busy_seconds()
        if machine is not None and self.start_machine is not None and wall > 0:
            out["others"] = max(0.0, (machine - self.start_machine) / wall - sum(out.values()))
        return out


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[index]


class Report(ReportBase):
    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))

    def check(self, phase: str, metric: str, value: float | None, shown: str, target: str,
              ok: bool | None) -> None:
        verdict = "n/a" if value is None or ok is None else ("pass" if ok else "MISS")
        self.add(phase, metric, shown, target, verdict)


# ------------------------------------------------------------------------------ workload

def pick_tenants(count: int, partitions: int) -> list[str]:
    """Tenant ids spread as evenly as possible over the partitions (Kafka's key partitioner)."""
    per = math.ceil(count / partitions)
    buckets: dict[int, list[str]] = {p: [] for p in range(partitions)}
    chosen: list[str] = []
    i = 0
    while len(chosen) < count:
        tenant = f"bench-t{i:04d}"
        p = kafka.partition_for(tenant, partitions)
        if len(buckets[p]) < per:
            buckets[p].append(tenant)
            chosen.append(tenant)
        i += 1
    return chosen


def run_steps(run_id: str, n: int) -> list[dict[str, Any]]:
    """The three commands of one run: RequestRun (client-chosen id), StartRun, RecordCost."""
    project = PROJECTS[n % len(PROJECTS)]
    return [
        {"type": "RequestRun", "run_id": run_id, "agent_id": f"agent-{n % 40:02d}",
         "project": project, "labels": {"env": "bench", "team": f"team-{n % 7}"}},
        {"type": "StartRun", "run_id": run_id},
        {"type": "RecordCost", "run_id": run_id, "provider": "anthropic",
         "model": "claude-sonnet-4", "tokens_in": 1200 + n % 500, "tokens_out": 300 + n % 97,
         "amount_micros": 4200 + n % 1000, "currency": "USD"},
    ]


def workload(tenants: list[str], commands: int) -> list[tuple[str, dict[str, Any], str | None]]:
    """(tenant, body, idempotency key) in log order: tenants round-robin, each run's steps in
    order within its tenant, so every command is valid when it is decided."""
    out: list[tuple[str, dict[str, Any], str | None]] = []
    per_tenant: dict[str, deque] = {t: deque() for t in tenants}
    n = 0
    while len(out) < commands:
        for tenant in tenants:
            queue = per_tenant[tenant]
            if not queue:
                run_id = str(uuid.uuid4())
                for step, body in enumerate(run_steps(run_id, n)):
                    queue.append((body, f"bench-{run_id}-{step}" if step == 0 else None))
                n += 1
            body, key = queue.popleft()
            out.append((tenant, body, key))
            if len(out) >= commands:
                break
    return out


def traceparent() -> str:
    """A W3C traceparent, as the API's span writes into every command envelope."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def principal_for(secret: str, tenant: str, settings: Settings):
    token = mint(secret, tenant, f"agent:{tenant}", ["operator"], settings.jwt_audience)
    return authenticate(token, secret, settings.jwt_audience)


def make_settings(bootstrap: str, prefix: str, partitions: int, secret: str, **extra: Any) -> Settings:
    # kafka_bootstrap has a validation_alias and Settings does not populate by name: a
    # `kafka_bootstrap=` keyword is silently ignored (the default 127.0.0.1:19092 wins), so
    # pass the alias, and check, so a bench never touches some other broker.
    settings = Settings(RUNLEDGER_KAFKA_BOOTSTRAP=bootstrap, topic_prefix=prefix,
                        partitions=partitions, jwt_secret=secret, **extra)
    if (settings.kafka_bootstrap, settings.topic_prefix) != (bootstrap, prefix):
        raise RuntimeError(f"settings did not take the bench broker/prefix: {settings!r}")
    return settings


def serve_env(settings: Settings, secret: str, workdir: Path,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `serve` this benchmark starts: none of the caller's RUNLEDGER_*
    settings leak in, and everything it stores outside Kafka/PostgreSQL (the embedded chdb
    data directory) lives in the bench's own work directory, never in the repo's .runledger."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
    env.update({
        "RUNLEDGER_CHDB_PATH": str(workdir / "chdb"),
        "RUNLEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RUNLEDGER_JWT_SECRET": secret,
        "RUNLEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "RUNLEDGER_PARTITIONS": str(settings.partitions),
        "RUNLEDGER_BATCH_MAX": str(settings.batch_max),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def serve_argv(args, *options: str, profile: Path | None = None) -> list[str]:
    """`python [-m cProfile -o FILE] -m infra.cli serve OPTIONS` (or --serve-entry instead)."""
    entry = args.serve_entry
    target = [entry] if entry.endswith(".py") else ["-m", entry]
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return [sys.executable, *prof, *target, "serve", *options]





async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefixes: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if any(t.startswith(p + ".") for p in prefixes)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def read_all(consumer: AIOKafkaConsumer, tps: list[TopicPartition], keep: bool,
                   desc: str, progress: bool) -> tuple[int, int, list]:
    """Read the assigned partitions from the beginning to their current end."""
    ends = await consumer.end_offsets(tps)
    await consumer.seek_to_beginning(*tps)
    remaining = {tp for tp in tps if ends[tp] > 0}
    count = size = 0
    kept: list = []
    with tqdm(desc=desc, unit="rec", disable=not progress, leave=False) as bar:
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                count += len(records)
                for r in records:
                    size += len(r.value)
                if keep:
                    kept.extend(records)
                bar.update(len(records))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    return count, size, kept


# ------------------------------------------------------------------------------ phase 1

@dataclass
class ProcessorResult:
    commands: int
    events: int
    steady_commands_s: float
    steady_events_s: float
    startup_commands_s: float
    startup_events_s: float
    window_s: float
    first_reply_after_s: float
    excluded_commands: int
    rss_mb: float | None
    cpu: dict[str, float]
    event_records: list


async def phase_processor(args, bootstrap: str, prefix: str, secret: str, workdir: Path,
                          report: Report) -> ProcessorResult | None:
    settings = make_settings(bootstrap, prefix, args.partitions, secret, batch_max=args.batch_max)
    await kafka.ensure_topics(settings)
    tenants = pick_tenants(args.tenants, args.partitions)
    principals = {t: principal_for(secret, t, settings) for t in tenants}
    work = workload(tenants, args.commands)

    envelopes = []
    for tenant, body, key in tqdm(work, desc="build command envelopes", unit="cmd",
                                  disable=not args.progress, leave=False):
        envelopes.append(command_envelope(principals[tenant], json.dumps(body).encode(), key,
                                          traceparent(), None))
    sizes = [len(kafka.dumps(e)) for e in envelopes]
    log(f"phase 1: {len(envelopes):,} command envelopes (mean {statistics.mean(sizes):.0f} B) "
        f"for {len(tenants)} tenants on {args.partitions} partitions; producing to "
        f"{settings.commands_topic}")

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        for env in tqdm(envelopes, desc="produce commands", unit="cmd", disable=not args.progress,
                        leave=False):
            futures.append(await producer.send(settings.commands_topic, kafka.dumps(env),
                                               key=env["tenant_id"].encode(),
                                               headers=[("traceparent", env["traceparent"].encode())]))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    reader = kafka.reader(settings)
    await reader.start()
    child = None
    try:
        reply_tps = [TopicPartition(settings.replies_topic, p) for p in range(args.partitions)]
        reader.assign(reply_tps)
        await reader.seek_to_beginning(*reply_tps)

        argv = serve_argv(args, "--no-api", "--no-projectors", profile=args.profile)
        t_spawn = time.perf_counter()
        child = Child("processor", argv, serve_env(settings, secret, workdir), workdir)
        meter = CpuMeter({"processor": child.pid, "broker": args.broker_pid,
                          "bench client": os.getpid()})
        arrivals: list[tuple[float, list[bytes]]] = []
        seen = 0
        last_progress = time.perf_counter()
        with tqdm(total=len(envelopes), desc="processor replies", unit="cmd",
                  disable=not args.progress, leave=False) as bar:
            while seen < len(envelopes):
                batches = await reader.getmany(timeout_ms=200, max_records=20_000)
                now = time.perf_counter()
                values = [r.value for records in batches.values() for r in records]
                if values:
                    arrivals.append((now, values))
                    seen += len(values)
                    bar.update(len(values))
                    last_progress = now
                elif not child.alive():
                    raise RuntimeError(f"processor exited with {child.proc.returncode}:\n{child.tail()}")
                elif now - last_progress > args.stall_s:
                    raise RuntimeError(f"no reply for {args.stall_s}s after {seen:,} replies; "
                                       f"processor log tail:\n{child.tail()}")
        cpu = meter.stop()
        rss = peak_rss_mb(child.pid)
    finally:
        await reader.stop()
        if child is not None:
            rc = child.stop()
            if rc not in (0, None, -signal.SIGTERM):
                report.errors.append(f"processor exited with status {rc}; log: {child.log_path}")

    replies = [json.loads(v) for _, values in arrivals for v in values]
    status = Counter(r["status"] for r in replies)
    if status.get("rejected"):
        codes = Counter(r.get("code") for r in replies if r["status"] == "rejected")
        report.errors.append(f"phase 1: {status['rejected']} of {len(replies)} commands were "
                             f"rejected ({dict(codes)}); the workload should be all-valid")
    events_per_arrival = [sum(len(json.loads(v).get("events", [])) for v in values)
                          for _, values in arrivals]
    total_events = sum(events_per_arrival)
    t_first, t_last = arrivals[0][0], arrivals[-1][0]
    window = t_last - t_first
    steady_cmds = len(replies) - len(arrivals[0][1])
    steady_events = total_events - events_per_arrival[0]
    steady_c = steady_cmds / window if window > 0 else float("nan")
    steady_e = steady_events / window if window > 0 else float("nan")
    full = t_last - t_spawn

    # Read back what was appended: counts the events independently of the replies and keeps
    # the exact records for the raw produce phase.
    consumer = kafka.reader(settings)
    await consumer.start()
    try:
        event_tps = [TopicPartition(settings.events_topic, p) for p in range(args.partitions)]
        consumer.assign(event_tps)
        t0 = time.perf_counter()
        n_events, n_bytes, records = await read_all(consumer, event_tps, True,
                                                    "read events topic", args.progress)
        read_s = time.perf_counter() - t0
    finally:
        await consumer.stop()
    if n_events != total_events:
        report.errors.append(f"phase 1: replies name {total_events} events but "
                             f"{settings.events_topic} holds {n_events}")
    report.data["events_topic_read"] = {"records": n_events, "bytes": n_bytes, "seconds": read_s}
    log(f"phase 1: {len(replies):,} replies ({dict(status)}), {total_events:,} events; "
        f"steady window {window:.2f}s, first reply {t_first - t_spawn:.2f}s after spawn")
    return ProcessorResult(len(replies), total_events, steady_c, steady_e,
                           len(replies) / full, total_events / full, window, t_first - t_spawn,
                           len(arrivals[0][1]), rss, cpu, records)


def phase_decide(args, secret: str) -> dict:
    """The processor's per-command CPU work without Kafka: decide, seal (hash chain), encode the
    event record and its CloudEvents headers, encode the reply. One process, one core: the
    ceiling of a single processor process before any broker round trip."""
    from domain.ledger import TenantLedger
    from schemas.envelope import cloudevents_headers, encode

    settings = make_settings(args.bootstrap, "benchdecide", args.partitions, secret)
    tenants = pick_tenants(args.tenants, args.partitions)
    principals = {t: principal_for(secret, t, settings) for t in tenants}
    envelopes = [command_envelope(principals[t], json.dumps(b).encode(), k, traceparent(), None)
                 for t, b, k in workload(tenants, args.commands)]
    ledgers: dict[str, TenantLedger] = {}
    events = 0
    now = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    for command in tqdm(envelopes, desc="decide only", unit="cmd", disable=not args.progress,
                        leave=False):
        ledger = ledgers.get(command["tenant_id"])
        if ledger is None:
            ledger = ledgers[command["tenant_id"]] = TenantLedger(command["tenant_id"])
        reply, sealed = ledger.execute(command, now)
        for env in sealed:
            encode(env)
            cloudevents_headers(env)
        kafka.dumps(reply)
        events += len(sealed)
    seconds = time.perf_counter() - t0
    return {"commands": len(envelopes), "events": events, "seconds": seconds,
            "commands_s": len(envelopes) / seconds, "events_s": events / seconds}


# ------------------------------------------------------------------------------ phases 2-3

async def phase_raw(args, bootstrap: str, prefix: str, records: list, report: Report) -> dict:
    topic = f"{prefix}.raw"
    await create_topic(bootstrap, topic, args.partitions)
    payload = [(r.value, r.key, list(r.headers)) for r in records]
    size = sum(len(v) for v, _, _ in payload)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    meter = CpuMeter({"broker": args.broker_pid, "bench client": os.getpid()})
    try:
        t0 = time.perf_counter()
        futures = []
        for value, key, headers in tqdm(payload, desc="raw produce", unit="rec",
                                        disable=not args.progress, leave=False):
            futures.append(await producer.send(topic, value, key=key, headers=headers))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        produce_s = time.perf_counter() - t0
    finally:
        await producer.stop()
    produce_cpu = meter.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(args.partitions)]
        consumer.assign(tps)
        t0 = time.perf_counter()
        count, _, _ = await read_all(consumer, tps, False, "raw consume", args.progress)
        consume_s = time.perf_counter() - t0
    finally:
        await consumer.stop()
    if count != len(payload):
        report.errors.append(f"phase 3: read {count} records back, produced {len(payload)}")
    return {"records": len(payload), "bytes": size, "produce_s": produce_s,
            "produce_rec_s": len(payload) / produce_s, "consume_s": consume_s,
            "consume_rec_s": count / consume_s, "produce_cpu": produce_cpu}


# ------------------------------------------------------------------------------ phase 4

def phase_peer(args, database_url: str, tenants: list[str], report: Report) -> dict:
    """The eventsourcing library on PostgreSQL, same domain aggregates, same command mix."""
    import psycopg
    from eventsourcing.application import Application

    from domain.budget import Budget
    from domain.run import Run
    from schemas.envelope import iso

    url = urlparse(database_url)
    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    base_env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/"), "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432), "POSTGRES_USER": url.username or "",
        "POSTGRES_PASSWORD": url.password or "", "POSTGRES_SCHEMA": schema,
    }
    work = workload(tenants, args.peer_commands)

    def drive(app: Application, batch: int, desc: str) -> tuple[int, float]:
        runs: dict[str, Run] = {}
        budgets: dict[tuple[str, str], Budget] = {}
        touched: dict[int, Any] = {}
        events = 0
        t0 = time.perf_counter()
        for i, (tenant, body, _) in enumerate(tqdm(work, desc=desc, unit="cmd",
                                                   disable=not args.progress, leave=False)):
            kind = body["type"]
            if kind == "RequestRun":
                agg = runs[body["run_id"]] = Run.request(body["run_id"], body["agent_id"],
                                                         body["project"], None, body["labels"])
            elif kind == "StartRun":
                agg = runs[body["run_id"]]
                agg.start()
            else:
                run = runs[body["run_id"]]
                agg = budgets.get((tenant, run.project))
                if agg is None:
                    agg = budgets[(tenant, run.project)] = Budget.open(tenant, run.project)
                    touched[id(agg)] = agg
                agg.record_cost(str(uuid.uuid4()), body["run_id"], body["provider"],
                                body["model"], body["tokens_in"], body["tokens_out"],
                                body["amount_micros"], body["currency"], None,
                                iso(datetime.now(timezone.utc)))
            touched[id(agg)] = agg
            if (i + 1) % batch == 0 or i + 1 == len(work):
                pending = list(touched.values())
                events += sum(len(a.pending_events) for a in pending)
                app.save(*pending)
                touched.clear()
        return events, time.perf_counter() - t0

    results = {"schema": schema}
    try:
        for mode, batch, db_functions in (("batch", 1000, "n"), ("batch+db-functions", 1000, "y"),
                                          ("single", 1, "n")):
            if mode == "batch+db-functions" and not args.peer_db_functions:
                continue
            name = f"Peer{mode.title().replace('+', '').replace('-', '')}"
            app_cls = type(name, (Application,), {"name": name})
            app = app_cls(env={**base_env, "POSTGRES_ENABLE_DB_FUNCTIONS": db_functions})
            meter = CpuMeter({"bench (eventsourcing)": os.getpid()})
            try:
                events, seconds = drive(app, batch, f"eventsourcing/pg {mode}")
            finally:
                app.close()
            results[mode] = {"events": events, "seconds": seconds, "events_s": events / seconds,
                             "commands_per_save": batch, "cpu": meter.stop()}
            log(f"phase 4: eventsourcing/postgres {mode}: {events:,} events in {seconds:.2f}s")
    finally:
        if not args.keep:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return results


# ------------------------------------------------------------------------------ phase 5

async def wait_ready(http, clients: dict, children: list[Child], tenants: list[str],
                     partitions: int, timeout: float) -> None:
    """Ready = /healthz answers 200 and one command per partition is accepted (so every
    partition is owned, fenced and rebuilt: the measured window holds no start-up)."""
    deadline = time.monotonic() + timeout
    last: Any = None

    def check_children() -> None:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")

    while time.monotonic() < deadline:
        check_children()
        try:
            response = await http.get("/healthz")
            last = response.text
            if response.status_code == 200:
                break
        except Exception as error:  # noqa: BLE001 - not up yet
            last = repr(error)
        await asyncio.sleep(0.2)
    else:
        raise RuntimeError(f"serve not healthy after {timeout}s (last: {last}):\n{children[0].tail()}")
    probes: dict[int, str] = {}
    for tenant in tenants:
        probes.setdefault(kafka.partition_for(tenant, partitions), tenant)
    waiting = set(probes.values())
    while waiting and time.monotonic() < deadline:
        check_children()

        async def probe(tenant: str) -> bool:
            try:
                body = {"type": "RequestRun", "agent_id": "bench-probe", "project": "probe"}
                return (await clients[tenant].send(body)).accepted
            except Exception:  # noqa: BLE001 - not ready yet (e.g. 504 outcome_pending)
                return False
        results = await asyncio.gather(*(probe(t) for t in waiting))
        waiting = {t for t, ok in zip(list(waiting), results) if not ok}
        if waiting:
            await asyncio.sleep(0.5)
    if waiting:
        raise RuntimeError(f"no command accepted for tenants {sorted(waiting)} within {timeout}s:\n"
                           f"{children[-1].tail()}")


async def phase_http(args, bootstrap: str, prefix: str, secret: str, workdir: Path,
                     report: Report, projectors: bool, split: bool, floor: bool = False) -> dict:
    import httpx

    from infra.client import LedgerClient

    port = args.http_port or free_port()
    settings = make_settings(bootstrap, prefix, args.partitions, secret)
    if floor:
        mode = "floor"
        children = [Child("echo-floor", [sys.executable, str(ROOT / "bench" / "echo_server.py"),
                                         str(port)], dict(os.environ), workdir)]
    else:
        await kafka.ensure_topics(settings)
        mode = f"{'split' if split else 'one'}-{'with' if projectors else 'no'}-projectors"
        profile = None
        if args.profile_http:
            profile = args.profile_http.with_name(
                f"{args.profile_http.stem}-{mode}{args.profile_http.suffix}")
            report.data.setdefault("http_profiles", []).append(str(profile))
        env = serve_env(settings, secret, workdir, {"RUNLEDGER_API_PORT": str(port),
                                                    "RUNLEDGER_DATABASE_URL": args.database_url})
        api_options = (([] if projectors else ["--no-projectors"])
                       + (["--no-processor"] if split else []))
        children = [Child(f"serve-{mode}", serve_argv(args, *api_options, profile=profile), env,
                          workdir)]
        if split:
            children.append(Child(f"processor-{mode}",
                                  serve_argv(args, "--no-api", "--no-projectors"), env, workdir))
    tenants = pick_tenants(args.tenants, args.partitions)
    base_url = f"http://127.0.0.1:{port}"
    # One HTTP client per tenant (one agent each), as in production. A single shared
    # httpx.AsyncClient with a large pool is not usable as a load generator here: once a few
    # hundred requests queue in its pool (after any server hiccup) its own CPU use explodes
    # and it never catches up again, even against a trivial server (see docs/bench.md).
    https = {t: http_client(args.http_client, port) for t in tenants}
    try:
        clients = {t: LedgerClient(https[t], mint(secret, t, f"agent:{t}", ["operator"],
                                                  settings.jwt_audience)) for t in tenants}
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as probe:
            await wait_ready(probe, clients, children, tenants, args.partitions, 90)
        mix = HttpMix(tenants)
        log(f"phase 5: {mode} up on port {port}; warm-up {args.http_warmup}s then "
            f"{args.http_duration}s at {args.http_rate:g}/s")
        await drive_open_loop(clients, mix, args.http_rate, args.http_warmup, None, args)
        meter = CpuMeter({**{c.name.split("-")[0]: c.pid for c in children},
                          "broker": args.broker_pid, "bench client": os.getpid()})
        samples = await drive_open_loop(clients, mix, args.http_rate, args.http_duration,
                                        "http commands", args)
        cpu = meter.stop()
        rss = {c.name.split("-")[0]: peak_rss_mb(c.pid) for c in children}
    finally:
        await asyncio.gather(*(h.aclose() for h in https.values()), return_exceptions=True)
        for child in children:
            rc = child.stop()
            if rc not in (0, None, -signal.SIGTERM):
                report.errors.append(f"{child.name} exited with status {rc}; log: {child.log_path}")
    latencies = sorted(s["latency_ms"] for s in samples if s["ok"])
    errors = [s for s in samples if not s["ok"]]
    span = max(s["sent_at"] for s in samples) - min(s["sent_at"] for s in samples)
    return {
        "sent": len(samples), "ok": len(latencies), "errors": len(errors),
        "error_kinds": dict(Counter(s["error"] for s in errors)),
        "offered_rate": len(samples) / span if span > 0 else float("nan"),
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else float("nan"),
        "mean": statistics.mean(latencies) if latencies else float("nan"),
        "max_send_lag_ms": max(s["lag_ms"] for s in samples),
        "mix": dict(Counter(s["type"] for s in samples)), "rss_mb": rss, "cpu": cpu,
    }


def http_client(kind: str, port: int):
    """The load generator's client for one tenant: bench/rawhttp.py (light) or httpx."""
    if kind == "raw":
        sys.path.insert(0, str(ROOT / "bench"))
        from rawhttp import RawHTTPClient
        return RawHTTPClient("127.0.0.1", port)
    import httpx
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpMix:
    """A run's next command is offered once its previous one was accepted; otherwise a new
    run starts. So every command is valid and the mix settles at ~1/3 each type."""

    def __init__(self, tenants: list[str]):
        self.tenants = tenants
        self.ready: deque = deque()
        self.n = 0

    def next(self) -> tuple[str, dict[str, Any], str, tuple | None]:
        if self.ready:
            tenant, run_id, step, n = self.ready.popleft()
        else:
            tenant, run_id, step, n = self.tenants[self.n % len(self.tenants)], str(uuid.uuid4()), 0, self.n
            self.n += 1
        body = run_steps(run_id, n)[step]
        follow = (tenant, run_id, step + 1, n) if step < 2 else None
        return tenant, body, f"http-{run_id}-{step}", follow


async def drive_open_loop(clients, mix: HttpMix, rate: float, duration: float,
                          desc: str | None, args) -> list[dict[str, Any]]:
    """Send at fixed instants start + k/rate regardless of outstanding requests."""
    total = int(rate * duration)
    samples: list[dict[str, Any]] = []
    tasks = set()

    async def one(scheduled: float, tenant: str, body: dict, key: str, follow: tuple | None):
        sent = time.perf_counter()
        sample = {"type": body["type"], "sent_at": sent, "lag_ms": (sent - scheduled) * 1000}
        try:
            outcome = await clients[tenant].send(body, idempotency_key=key)
            ok = outcome.accepted
            sample["error"] = None if ok else f"{outcome.status_code} {outcome.body.get('code')}"
        except Exception as error:  # noqa: BLE001 - counted as an error
            ok, sample["error"] = False, type(error).__name__
        sample["latency_ms"] = (time.perf_counter() - scheduled) * 1000
        sample["ok"] = ok
        if ok and follow:
            mix.ready.append(follow)
        samples.append(sample)
        bar.update(1)

    bar = tqdm(total=total, desc=desc, unit="cmd", disable=not (desc and args.progress), leave=False)
    start = time.perf_counter() + 0.05
    for k in range(total):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tenant, body, key, follow = mix.next()
        task = asyncio.create_task(one(scheduled, tenant, body, key, follow))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    bar.close()
    return samples


# ------------------------------------------------------------------------------ main

def print_profile(path: Path, limit: int = 30) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    print(out.getvalue())


async def main_async(args) -> Report:
    report = Report()
    bootstrap = args.bootstrap
    secret = secrets.token_urlsafe(36)  # 48 characters
    run_id = secrets.token_hex(4)
    prefix = f"bench{run_id}"
    workdir = Path(tempfile.mkdtemp(prefix=f"rlbench-{run_id}-"))
    report.data.update({"prefix": prefix, "workdir": str(workdir), "bootstrap": bootstrap,
                        "args": {k: (str(v) if isinstance(v, Path) else v)
                                 for k, v in vars(args).items()}})
    load = os.getloadavg()
    report.data["load_at_start"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    if load[0] > (os.cpu_count() or 1) / 2:
        report.notes.append(f"the machine was already busy at the start (1-min load average "
                            f"{load[0]:.2f} on {os.cpu_count()} cores): expect lower, noisier numbers")
    log(f"bench {prefix}: broker {bootstrap}, logs in {workdir}")
    phases = set(args.only or ["processor", "raw", "peer", "http"])
    created_prefixes = [prefix]
    proc: ProcessorResult | None = None
    try:
        if "processor" in phases or "raw" in phases:
            try:
                proc = await phase_processor(args, bootstrap, prefix, secret, workdir, report)
            except Exception as error:  # noqa: BLE001 - reported, run continues
                report.errors.append(f"phase 1 (processor) failed: {error!r}")
                traceback.print_exc()
        if proc is not None:
            report.data["processor"] = {k: v for k, v in vars(proc).items() if k != "event_records"}
            report.check("1 processor", "append throughput, events/s (steady)", proc.steady_events_s,
                         fmt_rate(proc.steady_events_s), f"≥ {TARGETS['processor_events_s']:,}",
                         proc.steady_events_s >= TARGETS["processor_events_s"])
            report.add("1 processor", "commands/s (steady)", fmt_rate(proc.steady_commands_s))
            report.add("1 processor", "events/s incl. start-up + rebuild",
                       f"{fmt_rate(proc.startup_events_s)} (first reply {proc.first_reply_after_s:.1f}s after spawn)")
            report.add("1 processor", "commands → events",
                       f"{proc.commands:,} → {proc.events:,} in {proc.window_s:.2f}s window "
                       f"(first batch of {proc.excluded_commands:,} excluded)")
            report.add("1 processor", "CPU used (cores) during the window",
                       ", ".join(f"{k} {v:.2f}" for k, v in proc.cpu.items()))
            report.add("1 processor", "peak RSS of the processor",
                       "n/a" if proc.rss_mb is None else f"{proc.rss_mb:,.0f} MB")
            try:
                decide = await asyncio.to_thread(phase_decide, args, secret)
                report.data["decide_only"] = decide
                report.add("1 processor", "decide+seal+encode only, no Kafka, events/s",
                           f"{fmt_rate(decide['events_s'])} (one process: its CPU ceiling)")
            except Exception as error:  # noqa: BLE001
                report.errors.append(f"phase 1b (decide only) failed: {error!r}")
                traceback.print_exc()
            read = report.data.get("events_topic_read")
            if read:
                report.add("3 consume", "events topic read_committed, records/s",
                           fmt_rate(read["records"] / read["seconds"]))
        raw = None
        if "raw" in phases and proc is not None and proc.event_records:
            try:
                raw = await phase_raw(args, bootstrap, prefix, proc.event_records, report)
            except Exception as error:  # noqa: BLE001
                report.errors.append(f"phase 2/3 (raw aiokafka) failed: {error!r}")
                traceback.print_exc()
        if raw:
            report.data["raw"] = raw
            mean = raw["bytes"] / raw["records"]
            report.add("2 produce", "raw aiokafka produce ceiling, records/s",
                       f"{fmt_rate(raw['produce_rec_s'])} ({raw['records']:,} × {mean:.0f} B, "
                       f"{raw['bytes'] / raw['produce_s'] / 1e6:.1f} MB/s)")
            if proc is not None:
                ratio = proc.steady_events_s / raw["produce_rec_s"]
                report.check("2 produce", "processor / raw produce", ratio, f"{ratio:.0%}",
                             f"≥ {TARGETS['ratio_raw_produce']:.0%}",
                             ratio >= TARGETS["ratio_raw_produce"])
            report.add("2 produce", "raw produce: CPU used (cores)",
                       ", ".join(f"{k} {v:.2f}" for k, v in raw["produce_cpu"].items()))
            report.add("3 consume", "raw aiokafka consume, records/s", fmt_rate(raw["consume_rec_s"]))
        if proc is not None:
            proc.event_records = []  # free phase 1's records before the latency-sensitive phases
        gc.collect()
        gc.freeze()  # keep the collector from walking the long-lived objects during phase 5
        peer = None
        if "peer" in phases:
            if not args.database_url:
                report.notes.append("phase 4 skipped: no --database-url / RUNLEDGER_DATABASE_URL")
            else:
                try:
                    tenants = pick_tenants(args.tenants, args.partitions)
                    peer = await asyncio.to_thread(phase_peer, args, args.database_url, tenants, report)
                except Exception as error:  # noqa: BLE001
                    report.errors.append(f"phase 4 (eventsourcing peer) failed: {error!r}")
                    traceback.print_exc()
        if peer:
            report.data["peer"] = peer
            modes = [m for m in ("batch", "batch+db-functions", "single") if m in peer]
            for mode in modes:
                label = {"batch": "1,000 commands per save", "single": "1 command per save",
                         "batch+db-functions": "1,000 per save, POSTGRES_ENABLE_DB_FUNCTIONS"}[mode]
                report.add("4 peer", f"eventsourcing/postgres {mode} ({label}), events/s",
                           fmt_rate(peer[mode]["events_s"]))
                report.add("4 peer", f"{mode}: CPU used (cores; others include PostgreSQL)",
                           ", ".join(f"{k} {v:.2f}" for k, v in peer[mode]["cpu"].items()))
            best = max((m for m in modes if m != "single"), key=lambda m: peer[m]["events_s"],
                       default=None)
            if proc is not None and best:
                ratio = proc.steady_events_s / peer[best]["events_s"]
                report.check("4 peer", f"processor / peer ({best})", ratio, f"{ratio:.2f}×",
                             f"≥ {TARGETS['ratio_peer']:.0f}×", ratio >= TARGETS["ratio_peer"])
        if "http" in phases:
            if not args.database_url:
                report.notes.append("phase 5 skipped: the API needs PostgreSQL (--database-url / "
                                    "RUNLEDGER_DATABASE_URL)")
            projector_modes = {"off": [False], "on": [True], "both": [False, True]}[args.http_projectors]
            layouts = {"one": [False], "split": [True], "both": [False, True]}[args.http_layout]
            # with both settings, the split layout is run without projectors only
            runs = [(p, sp) for p in projector_modes for sp in layouts
                    if not (p and sp and len(projector_modes) > 1)]
            runs = [(p, sp, False) for p, sp in runs] if args.database_url else []
            if args.http_floor:
                runs.append((False, False, True))
            for index, (projectors, split, floor) in enumerate(runs):
                http_prefix = f"{prefix}h{index}"
                created_prefixes.append(http_prefix)
                label = ("floor: echo endpoint, no Kafka" if floor else
                         "API+processor" + ("+projectors" if projectors else "")
                         if not split else
                         "split: API" + ("+projectors" if projectors else "") + " and processor in 2 processes")
                try:
                    http = await phase_http(args, bootstrap, http_prefix, secret, workdir, report,
                                            projectors, split, floor)
                except Exception as error:  # noqa: BLE001
                    http = None
                    report.errors.append(f"phase 5 (http, {label}) failed: {error!r}")
                    traceback.print_exc()
                if http:
                    report.data[f"http ({label})"] = http
                    if floor:
                        report.add("5 http", f"{label}: p99 latency at {args.http_rate:g} cmd/s",
                                   f"{http['p99']:.1f} ms")
                    else:
                        report.check("5 http", f"{label}: p99 latency at {args.http_rate:g} cmd/s",
                                     http["p99"], f"{http['p99']:.1f} ms",
                                     f"< {TARGETS['http_p99_ms']:g} ms",
                                     http["p99"] < TARGETS["http_p99_ms"] and not http["errors"])
                    report.add("5 http", f"{label}: p50 / p95 / max latency",
                               f"{http['p50']:.1f} / {http['p95']:.1f} / {http['max']:.1f} ms")
                    report.add("5 http", f"{label}: sent / errors / offered rate",
                               f"{http['sent']:,} / {http['errors']} / {http['offered_rate']:.0f} per s "
                               f"(max send lag {http['max_send_lag_ms']:.0f} ms)")
                    report.add("5 http", f"{label}: CPU used (cores)",
                               ", ".join(f"{k} {v:.2f}" for k, v in http["cpu"].items()))
                    report.add("5 http", f"{label}: peak RSS",
                               ", ".join(f"{k} {v:,.0f} MB" for k, v in http["rss_mb"].items()
                                         if v is not None) or "n/a")
                    if http["errors"]:
                        report.errors.append(f"phase 5 ({label}): {http['errors']} commands "
                                             f"failed: {http['error_kinds']}")
    finally:
        if not args.keep:
            try:
                await delete_topics(bootstrap, created_prefixes)
            except Exception as error:  # noqa: BLE001
                report.notes.append(f"could not delete bench topics: {error!r}")
            shutil.rmtree(workdir / "chdb", ignore_errors=True)
            if args.database_url:
                try:
                    await asyncio.to_thread(drop_read_models, args.database_url, created_prefixes)
                except Exception as error:  # noqa: BLE001
                    report.notes.append(f"could not drop the bench read-model schemas: {error!r}")
    return report


def drop_read_models(database_url: str, prefixes: list[str]) -> None:
    """Drop the projection schemas and registry rows `serve` created for the bench prefixes
    (schemas `<prefix>_<name>_g<N>`, registry `public.runledger_projections` keyed `<prefix>:`)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url, autocommit=True) as conn:
        for prefix in prefixes:
            schemas = [r[0] for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (prefix.lower() + "\\_%",))]
            for schema in schemas:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            if conn.execute("SELECT to_regclass('public.runledger_projections')").fetchone()[0]:
                conn.execute("DELETE FROM public.runledger_projections WHERE name LIKE %s",
                             (prefix + ":%",))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:39092"))
    p.add_argument("--database-url", default=os.environ.get("RUNLEDGER_DATABASE_URL"),
                   help="PostgreSQL for the eventsourcing peer (phase 4 is skipped without it)")
    p.add_argument("--commands", type=int, default=50_000, help="commands for the processor phase")
    p.add_argument("--peer-commands", type=int, default=None,
                   help="commands for the peer phase (default: --commands)")
    p.add_argument("--no-peer-db-functions", dest="peer_db_functions", action="store_false",
                   help="skip the peer's batch mode with POSTGRES_ENABLE_DB_FUNCTIONS=y (the "
                        "library's INSERT through a stored function); the ratio uses the faster "
                        "of the batch modes")
    p.add_argument("--tenants", type=int, default=24)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--batch-max", type=int, default=1000, help="RUNLEDGER_BATCH_MAX for the processor")
    p.add_argument("--http-rate", type=float, default=200.0, help="commands/s, open loop")
    p.add_argument("--http-duration", type=float, default=20.0, help="measured seconds")
    p.add_argument("--http-warmup", type=float, default=3.0, help="unmeasured seconds first")
    p.add_argument("--http-client", choices=["raw", "httpx"], default="raw",
                   help="load generator client: bench/rawhttp.py (a fraction of httpx's CPU, "
                        "which the server would otherwise not get on a small machine) or httpx")
    p.add_argument("--http-projectors", choices=["off", "on", "both"], default="both",
                   help="run serve without projectors (API + processor), with them, or both")
    p.add_argument("--http-layout", choices=["one", "split", "both"], default="both",
                   help="one: API and processor in one `serve` process; split: `serve "
                        "--no-processor` + `serve --no-api` as two processes")
    p.add_argument("--no-http-floor", dest="http_floor", action="store_false",
                   help="skip the HTTP floor run (same load against bench/echo_server.py)")
    p.add_argument("--http-port", type=int, default=None, help="API port (default: a free one)")
    p.add_argument("--only", action="append", choices=["processor", "raw", "peer", "http"],
                   help="run only these phases (repeatable; raw needs processor's records)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3,000 commands, 5 s of HTTP (explicit flags still win)")
    p.add_argument("--profile", type=Path, default=None,
                   help="run the phase-1 processor under cProfile, write the stats here and print "
                        "the top functions (its timings are then distorted)")
    p.add_argument("--serve-entry", default="infra.cli",
                   help="module (or .py file) whose CLI `serve` starts the processor/API; for "
                        "A/B runs of a patched processor without editing the project")
    p.add_argument("--profile-http", type=Path, default=None,
                   help="run phase 5's serve under cProfile; stats go to PATH-<mode>.prof")
    p.add_argument("--stall-s", type=float, default=60.0, help="error if no reply for this long")
    p.add_argument("--broker-pid", type=int, default=None,
                   help="Kafka broker pid, to report its CPU use (default: $RUNLEDGER_HOME/kafka.pid)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the bench topics and PG schema")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="tqdm progress bars on stderr (default: only when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    if args.quick:
        if "--commands" not in explicit:
            args.commands = 3000
        if "--http-duration" not in explicit:
            args.http_duration = 5.0
        if "--http-warmup" not in explicit:
            args.http_warmup = 1.0
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    if args.peer_commands is None:
        args.peer_commands = args.commands
    if args.broker_pid is None:
        home = os.environ.get("RUNLEDGER_HOME")
        try:
            args.broker_pid = int(Path(home, "kafka.pid").read_text().split()[0]) if home else None
        except (OSError, ValueError, IndexError):
            args.broker_pid = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    report = asyncio.run(main_async(args))
    print()
    load = os.getloadavg()
    print(f"## runledger write path — {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, broker {args.bootstrap}")
    print(f"\nload average at start {report.data.get('load_at_start', 'n/a')}, at end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; 'others' in the CPU rows = cores used by "
          f"processes this benchmark did not start")
    print()
    print(report.table())
    print()
    print("steady = from the first reply batch to the last one (processor start-up, fencing and "
          "rebuild excluded; the first batch's commands are not counted).")
    print("HTTP latency is measured from each command's scheduled send time (open loop).")
    for note in report.notes:
        print(f"note: {note}")
    for error in report.errors:
        print(f"ERROR: {error}")
    if args.profile and args.profile.exists():
        print(f"\n## cProfile of the processor ({args.profile})\n")
        print_profile(args.profile)
    if args.json:
        report.data["rows"] = [vars(r) for r in report.rows]
        report.data["errors"] = report.errors
        report.data["date"] = started.isoformat()
        args.json.write_text(json.dumps(report.data, indent=2, default=str))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
