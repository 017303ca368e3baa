"""Phase 1: pre-produced commands through `serve --no-api --no-projectors`, timed from its replies.

Steady = from the first batch of replies to the last one: start-up, group join, fencing and the
rebuild are excluded, and so are the first batch's commands. The events the replies name are
checked against a read_committed read of the events topic, which is also kept for phases 2-3.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bench.lib.measure import Window
from bench.lib.meters import CpuMeter, memory_mb
from bench.lib.procs import Child, python_argv
from bench.lib.report import Report
from bench.lib.topics import produce_all, timed_read, tps
from bench.write.workload import serve_env
from infra.adapters import kafka
from infra.adapters.settings import Settings

Arrival = tuple[float, list[bytes]]  # (when a getmany returned, the reply values it returned)


@dataclass
class ProcessorResult:
    commands: int
    events: int
    steady: Window            # events from the first reply batch to the last
    steady_commands: Window
    since_spawn: Window       # every event, from spawning the process to the last reply
    first_reply_after_s: float
    excluded_commands: int
    rss_mb: float | None
    cpu: dict[str, float]
    statuses: dict[str, int]
    event_records: list = field(default_factory=list, repr=False)


async def produce(settings: Settings, envelopes: list[dict], progress: bool) -> None:
    """Produce the command envelopes, keyed by tenant, in bulk."""
    await produce_all(settings.kafka_bootstrap, (
        {"topic": settings.commands_topic, "value": kafka.dumps(env), "key": env["tenant_id"].encode(),
         "headers": [("traceparent", env["traceparent"].encode())]}
        for env in tqdm(envelopes, desc="produce commands", unit="cmd", disable=not progress, leave=False)))


async def collect(reader, child: Child, expected: int, args) -> list[Arrival]:
    """Read replies until `expected` have arrived; raise if the processor exits or stalls."""
    arrivals: list[Arrival] = []
    seen, last_progress = 0, time.perf_counter()
    with tqdm(total=expected, desc="processor replies", unit="cmd", disable=not args.progress, leave=False) as bar:
        while seen < expected:
            batches = await reader.getmany(timeout_ms=200, max_records=20_000)
            now = time.perf_counter()
            values = [r.value for records in batches.values() for r in records]
            if values:
                arrivals.append((now, values))
                seen += len(values)
                bar.update(len(values))
                last_progress = now
            elif now - last_progress > args.stall_s:
                raise RuntimeError(f"no reply for {args.stall_s}s after {seen:,} replies:\n{child.tail()}")
            else:
                child.check()
    return arrivals


async def run_processor(args, settings: Settings, workdir: Path, expected: int, report: Report,
                        name: str = "processor", env: dict[str, str | None] | None = None,
                        watch: dict[str, int] | None = None,
                        profile: Path | None = None) -> tuple[list[Arrival], float, dict, float | None]:
    """Spawn the processor (`env` added to its environment) and collect its replies: (arrivals, spawn time,
    CPU of it and of the `watch` processes, peak RSS)."""
    reader = kafka.reader(settings)
    await reader.start()
    child = None
    try:
        reader.assign(tps(settings, settings.replies_topic))
        await reader.seek_to_beginning()
        argv = python_argv(args.serve_entry, "serve", "--no-api", "--no-projectors", profile=profile)
        spawned = time.perf_counter()
        child = Child(name, argv, serve_env(settings, workdir, env), workdir)
        meter = CpuMeter.with_stack({"processor": child.pid, "bench client": os.getpid(), **(watch or {})},
                                    args.stack_home)
        arrivals = await collect(reader, child, expected, args)
        return arrivals, spawned, meter.stop(), memory_mb(child.pid, "VmHWM")
    finally:
        await reader.stop()
        if child is not None and not child.stopped_cleanly():
            report.errors.append(f"{name} exited with status {child.proc.returncode}; log: {child.log_path}")


def result_of(arrivals: list[Arrival], spawned: float, cpu: dict, rss: float | None) -> ProcessorResult:
    replies = [json.loads(v) for _, values in arrivals for v in values]
    per_arrival = [sum(len(json.loads(v).get("events", [])) for v in values) for _, values in arrivals]
    events = sum(per_arrival)
    first, last = arrivals[0][0], arrivals[-1][0]
    excluded = len(arrivals[0][1])
    return ProcessorResult(
        len(replies), events, Window(events - per_arrival[0], last - first),
        Window(len(replies) - excluded, last - first, "commands"), Window(events, last - spawned),
        first - spawned, excluded, rss, cpu, dict(Counter(r["status"] for r in replies)))


async def phase_processor(args, settings: Settings, workdir: Path, envelopes: list[dict],
                          report: Report, log) -> ProcessorResult:
    await kafka.ensure_topics(settings)
    mean = statistics.mean(len(kafka.dumps(e)) for e in envelopes)
    log(f"phase 1: {len(envelopes):,} command envelopes (mean {mean:.0f} B); producing to {settings.commands_topic}")
    await produce(settings, envelopes, args.progress)
    result = result_of(*await run_processor(args, settings, workdir, len(envelopes), report, profile=args.profile))
    if result.statuses.get("rejected"):
        report.errors.append(f"phase 1: {result.statuses['rejected']} of {result.commands} commands were "
                             "rejected; the workload should be all-valid")
    records: list = []
    count, seconds = await timed_read(settings, settings.events_topic, records.append, "read events topic",
                                      args.progress)
    # the processor also appends its checkpoint events (ADR 0010: checkpoint.opened, checkpoint.signed),
    # which no reply names
    types = Counter(json.loads(record.value)["type"] for record in records)
    checkpoints = sum(n for kind, n in types.items() if kind.startswith("checkpoint."))
    if count - checkpoints != result.events:
        report.errors.append(f"phase 1: replies name {result.events} events but {settings.events_topic} holds "
                             f"{count - checkpoints} (and {checkpoints} checkpoints): {dict(types)}")
    report.data["events_topic_read"] = {"records": count, "seconds": seconds}
    result.event_records = records
    log(f"phase 1: {result.commands:,} replies {result.statuses}, {result.events:,} events; "
        f"steady {result.steady.text()}, first reply {result.first_reply_after_s:.2f}s after spawn")
    return result
