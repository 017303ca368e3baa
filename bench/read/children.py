"""The steady phase's child processes (multiprocessing, spawn): the command processor and the load driver."""
from __future__ import annotations

import asyncio
import logging
import os
import time

from bench.lib.measure import percentile
from bench.lib.topics import bench_settings
from bench.read.prefill import until
from bench.read.workload import build_commands
from infra.adapters import kafka


def processor_child(settings_args: dict, ready, stop, results) -> None:
    """A CommandProcessor until `stop` is set; its stats go to `results`."""
    asyncio.run(run_processor(settings_args, ready, stop, results))


async def run_processor(settings_args: dict, ready, stop, results) -> None:
    from commands.processor import CommandProcessor

    logging.basicConfig(level="WARNING")
    settings = bench_settings(**settings_args)
    processor = CommandProcessor(settings)
    halt = asyncio.Event()
    task = asyncio.create_task(processor.run(halt))
    await until(lambda: len(processor.owners) == settings.partitions or task.done(), 300,
                "the processor to own every partition")
    ready.set()
    while not stop.is_set() and not task.done():
        await asyncio.sleep(0.1)
    halt.set()
    await asyncio.gather(task, return_exceptions=True)
    results.put({**processor.stats, "broken": processor.broken, "pid": os.getpid()})


def driver_child(settings_args: dict, tenants: list[str], seed: int, rate: float, count: int, conn) -> None:
    """Build `count` commands, then on "go" send command i at t0 + i/rate (late sends counted, never skipped)."""
    asyncio.run(drive(settings_args, tenants, seed, rate, count, conn))


async def send_on_time(producer, topic: str, values: list, rate: float) -> tuple[float, list[float]]:
    start, slips, i = time.perf_counter(), [], 0
    while i < len(values):
        now = time.perf_counter() - start
        while i < len(values) and i / rate <= now:
            slips.append(now - i / rate)
            value, key = values[i]
            await producer.send(topic, value, key=key)
            i += 1
        if i < len(values):
            await asyncio.sleep(max(0.0, i / rate - (time.perf_counter() - start)))
    return time.perf_counter() - start, slips


async def drive(settings_args: dict, tenants: list[str], seed: int, rate: float, count: int, conn) -> None:
    settings = bench_settings(**settings_args)
    values = [(kafka.dumps(c), c["tenant_id"].encode()) for c in build_commands(tenants, count, seed)]
    producer = kafka.command_producer(settings)
    await producer.start()
    try:
        conn.send(("ready", len(values)))
        conn.recv()  # "go"
        start_wall = time.time()
        sent_s, slips = await send_on_time(producer, settings.commands_topic, values, rate)
        await producer.flush()
    finally:
        await producer.stop()
    conn.send({"sent": len(values), "start_wall": start_wall, "sent_s": sent_s,
               "slip_p50_ms": percentile(slips, 50) * 1000, "slip_p99_ms": percentile(slips, 99) * 1000,
               "slip_max_ms": max(slips, default=0.0) * 1000, "pid": os.getpid()})
