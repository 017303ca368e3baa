"""Phase 6: batch ingest through HTTP end to end: POST /v1/commands/batch, every command decided and replied.

Closed loop: --batch-lanes clients, each a tenant of its own partition, send a batch of --batch-size
commands and wait for its answer (every outcome, so every command decided by the processor, its
events committed and its reply read back by the API) before sending the next. Each batch carries
whole runs (RequestRun, StartRun, RecordCost in order, so each is valid when decided), so lanes
never wait on each other. Warm-up rounds first, all lanes together; then the measured rounds, and
the rate is the events the measured answers acknowledged over the time from their first send to
their last answer. Bodies are encoded before the window opens: the client is not what is measured.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.lib.measure import Dist, Window
from bench.lib.meters import CpuMeter, memory_mb
from bench.lib.procs import Child, free_port
from bench.lib.tenants import probe_tenants, spread_tenants
from bench.lib.topics import bench_settings
from bench.write.http import Layout, every_partition_owned, healthy, http_client, start_servers
from bench.write.workload import run_steps
from infra.adapters import kafka
from infra.adapters.http.auth import mint

PATH = "/v1/commands/batch"


@dataclass
class BatchResult:
    events: Window            # events the measured answers acknowledged
    commands: Window          # commands accepted
    latency: Dist             # per batch, ms from send to answer
    batches: int
    refused: dict[str, int]   # item code (or the request's status) → count: each one a command that should be valid
    cpu: dict[str, float]
    rss_mb: dict[str, float | None]


def layouts(args) -> list[Layout]:
    splits = {"one": [False], "split": [True], "both": [False, True]}[args.batch_layout]
    return [Layout(False, split) for split in splits]


def batch_of(size: int, stem: str) -> bytes:
    """`size` commands of whole runs in order, each with its own idempotency key, as one JSON array."""
    items = []
    while len(items) < size:
        run, n = str(uuid.uuid4()), len(items)
        for step, body in enumerate(run_steps(run, n)[:size - len(items)]):
            items.append({**body, "idempotency_key": f"{stem}-{run}-{step}"})
    return json.dumps(items, separators=(",", ":")).encode()


@dataclass
class Answer:
    sent: float
    seconds: float
    events: int
    accepted: int
    refused: Counter


def answer_of(response, sent: float) -> Answer:
    seconds = time.perf_counter() - sent
    if response.status_code != 200:
        return Answer(sent, seconds, 0, 0, Counter({f"{response.status_code} {response.json().get('code')}": 1}))
    items = response.json()["items"]
    accepted = [o for o in items if o["status"] == "accepted"]
    refused = Counter(o.get("code", o["status"]) for o in items if o["status"] != "accepted")
    return Answer(sent, seconds, sum(len(o["events"]) for o in accepted), len(accepted), refused)


async def lane(http, headers: dict[str, str], bodies: list[bytes]) -> list[Answer]:
    answers = []
    for body in bodies:
        sent = time.perf_counter()
        answers.append(answer_of(await http.post(PATH, headers=headers, content=body), sent))
    return answers


def result_of(answers: list[Answer], started: float, ended: float, cpu: dict, rss: dict) -> BatchResult:
    seconds = ended - started
    refused = sum((a.refused for a in answers), Counter())
    return BatchResult(Window(sum(a.events for a in answers), seconds, "events"),
                       Window(sum(a.accepted for a in answers), seconds, "commands"),
                       Dist.of(a.seconds * 1000 for a in answers), len(answers), dict(refused), cpu, rss)


async def measure(args, https: dict, headers: dict, children: list[Child], log) -> BatchResult:
    tenants = sorted(https)
    rounds = {t: [batch_of(args.batch_size, f"{t}-w{r}") for r in range(args.batch_warmup)] for t in tenants}
    measured = {t: [batch_of(args.batch_size, f"{t}-m{r}") for r in range(args.batch_rounds)] for t in tenants}
    await asyncio.gather(*(lane(https[t], headers[t], rounds[t]) for t in tenants))
    log(f"phase 6: {len(tenants)} lanes × {args.batch_rounds} batches of {args.batch_size:,}")
    meter = CpuMeter.with_stack({**{c.name.split("-")[0]: c.pid for c in children}, "bench client": os.getpid()},
                                args.stack_home)
    started = time.perf_counter()
    answers = [a for done in await asyncio.gather(*(lane(https[t], headers[t], measured[t]) for t in tenants))
               for a in done]
    ended = time.perf_counter()
    return result_of(answers, started, ended, meter.stop(),
                     {c.name.split("-")[0]: memory_mb(c.pid, "VmHWM") for c in children})


async def phase_batch(args, prefix: str, secret: str, workdir: Path, layout: Layout, report, log) -> BatchResult:
    from infra.entry.client import LedgerClient

    port = args.http_port or free_port()
    settings = bench_settings(args.bootstrap, prefix, args.partitions, secret,
                              batch_max=max(args.batch_max, args.batch_size))
    await kafka.ensure_topics(settings)
    children = start_servers(args, layout, settings, workdir, port, report)
    spread = spread_tenants(args.tenants, args.partitions, "bench-t")
    tenants = probe_tenants(spread, args.partitions)[:args.batch_lanes]
    https = {t: http_client("raw", port) for t in spread}
    try:
        tokens = {t: mint(secret, t, f"agent:{t}", ["operator"], settings.jwt_audience) for t in spread}
        await healthy(port, children, 90)
        await every_partition_owned({t: LedgerClient(https[t], tokens[t]) for t in spread}, children, spread,
                                    args.partitions, 90)
        headers = {t: {"Authorization": f"Bearer {tokens[t]}"} for t in tenants}
        return await measure(args, {t: https[t] for t in tenants}, headers, children, log)
    finally:
        await asyncio.gather(*(h.aclose() for h in https.values()), return_exceptions=True)
        for child in children:
            if not child.stopped_cleanly():
                report.errors.append(f"{child.name} exited with status {child.proc.returncode}; log: {child.log_path}")
