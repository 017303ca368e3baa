"""Phase 1: commands of the realistic mix through an in-process CommandProcessor until ≥ --events are appended."""
from __future__ import annotations

import asyncio
import json
import math
import time

from tqdm import tqdm

from bench.lib.measure import Window
from bench.lib.topics import read_range
from bench.read.workload import build_commands
from infra.adapters import kafka


async def until(check, timeout_s: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every)


async def follow(processor, task: asyncio.Task, sent: int, stall_s: float) -> None:
    """Wait until the processor has replied to `sent` commands; raise if it stops or stalls."""
    last, last_change = processor.stats["commands"], time.monotonic()
    while processor.stats["commands"] < sent:
        if task.done():
            raise RuntimeError(f"the processor stopped: {task.exception()!r}")
        if processor.broken:
            raise RuntimeError(f"the processor broke: {processor.broken}")
        now = processor.stats["commands"]
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            raise RuntimeError(f"no command processed for {stall_s}s ({now}/{sent})")
        await asyncio.sleep(0.2)


async def feed(args, settings, processor, task, tenants: list[str]) -> int:
    """Produce commands in rounds, sized by the events/command seen so far; return how many were sent."""
    producer = kafka.command_producer(settings)
    await producer.start()
    try:
        sent, seed, ratio = 0, args.seed, 1.1
        while processor.stats["events"] < args.events:
            count = math.ceil((args.events - processor.stats["events"]) / ratio * 1.02)
            commands = build_commands(tenants, count, seed, args.progress, f"building commands (seed {seed})")
            seed += 1
            for c in tqdm(commands, desc="producing commands", unit="cmd", disable=not args.progress, leave=False):
                await producer.send(settings.commands_topic, kafka.dumps(c), key=c["tenant_id"].encode())
            await producer.flush()
            sent += len(commands)
            await follow(processor, task, sent, args.stall_s)
            ratio = processor.stats["events"] / max(1, processor.stats["commands"])
        return sent
    finally:
        await producer.stop()


async def prefill(args, settings, tenants: list[str], report) -> dict:
    from commands.processor import CommandProcessor

    processor = CommandProcessor(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop), name="prefill-processor")
    try:
        await until(lambda: len(processor.owners) == settings.partitions or task.done(), 120,
                    "the processor to own every partition")
        started = time.perf_counter()
        sent = await feed(args, settings, processor, task, tenants)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
    return await check_replies(settings, sent, processor.stats["events"], elapsed, len(tenants), report)


async def check_replies(settings, sent: int, events: int, elapsed: float, tenants: int, report) -> dict:
    statuses: dict[str, int] = {}

    def count(record) -> None:
        status = json.loads(record.value)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    replies = await read_range(settings, settings.replies_topic, count)
    if replies != sent:
        report.errors.append(f"prefill: {sent} commands but {replies} replies")
    if set(statuses) - {"accepted"}:
        report.errors.append(f"prefill: the all-valid workload got replies {statuses}")
    report.info("prefill", "commands → events appended (in-process CommandProcessor)",
                f"{sent:,} → {events:,} ({events / sent:.3f} events/command, {tenants} tenants, "
                f"{settings.partitions} partitions, replies {statuses})")
    report.rate("prefill", "processor rate incl. command building (events/s)", Window(events, elapsed))
    return {"commands": sent, "events": events, "events_per_command": events / sent, "seconds": elapsed}
