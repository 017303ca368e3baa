"""What a consumer's fetch settings cost the broker idle, and what they add to a trickle record's delivery.

For each setting, CONSUMERS group-less read_committed consumers of one 6-partition topic (as the
PostgreSQL projectors: every partition each) run while a producer sends TRICKLE records/s; the
window measures broker cores, the request log counts fetches, and each record's delivery latency
(produced → returned by getmany, one clock) is taken from every consumer. With minBytes 1 MiB the
broker holds each fetch for the whole wait however little arrives, so a record waits for the
fetch in flight to expire; with minBytes 1 it is answered as soon as a record lands.
"""
from __future__ import annotations

import asyncio
import os
import struct
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.kafka.requestlog import Counting
from bench.lib.measure import Dist
from bench.lib.meters import CpuMeter
from bench.lib.topics import create_topic

CONSUMERS = 5
TRICKLE = 5.0  # records/s
PARTITIONS = 6
SETTINGS = [(20, 1024 * 1024), (100, 1024 * 1024), (500, 1024 * 1024), (500, 1)]  # (fetch_max_wait_ms, fetch_min_bytes)


@dataclass
class Wait:
    max_wait_ms: int
    min_bytes: int
    broker_cores: float
    fetches_per_s: float
    latency: Dist

    @property
    def label(self) -> str:
        return f"fetch_max_wait_ms {self.max_wait_ms}, fetch_min_bytes {self.min_bytes:,}"


async def consume(consumer: AIOKafkaConsumer, latencies: list[float], until: float) -> None:
    while time.time() < until:
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            now = time.time()
            latencies += [(now - struct.unpack(">d", r.value[:8])[0]) * 1000 for r in records]


async def trickle(producer: AIOKafkaProducer, topic: str, until: float) -> None:
    n = 0
    while time.time() < until:
        await producer.send_and_wait(topic, struct.pack(">d", time.time()) + os.urandom(200), partition=n % PARTITIONS)
        n += 1
        await asyncio.sleep(1 / TRICKLE)  # the trickle's pace, not synchronisation


async def one(run, topic: str, max_wait_ms: int, min_bytes: int) -> Wait:
    a = run.args
    consumers = [AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, isolation_level="read_committed",
                                  fetch_max_wait_ms=max_wait_ms, fetch_min_bytes=min_bytes,
                                  max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
                 for _ in range(CONSUMERS)]
    producer = AIOKafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=0)
    await producer.start()
    for c in consumers:
        await c.start()
        c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await c.seek_to_end()
    latencies: list[float] = []
    settle = min(a.settle_s, 3.0)  # consumers of an empty topic are steady within a few fetches
    until = time.time() + settle + a.window + a.count_s + 6
    tasks = [asyncio.create_task(consume(c, latencies, until)) for c in consumers]
    tasks.append(asyncio.create_task(trickle(producer, topic, until)))
    try:
        await asyncio.sleep(settle)
        latencies.clear()
        meter = CpuMeter({"broker": run.broker})
        await asyncio.sleep(a.window)  # the measuring window
        cores = meter.stop()["broker"]
        async with Counting(a.bootstrap, run.home / "kafka.log", run.prefix) as counting:
            await asyncio.sleep(a.count_s)
        fetches = counting.traffic.of("FETCH") / counting.traffic.seconds
        await asyncio.gather(*tasks)
        return Wait(max_wait_ms, min_bytes, cores, fetches, Dist.of(latencies))
    finally:
        for c in consumers:
            await c.stop()
        await producer.stop()


async def sweep(run) -> list[Wait]:
    topic = f"{run.prefix}.waits"
    await create_topic(run.args.bootstrap, topic, PARTITIONS)
    return [await one(run, topic, w, b) for w, b in SETTINGS]
