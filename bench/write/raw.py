"""Phases 2-3: the processor's own records produced again with plain aiokafka (no transactions), and read back.

Produce: enable_idempotence, acks=all, linger 5 ms, 1 MiB batches, futures gathered every 5,000
records, to a fresh topic with the same partitions. Consume: a group-less consumer, a baseline
for projector benchmarks.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.lib.measure import Window
from bench.lib.meters import CpuMeter
from bench.lib.topics import create_topic, drain_to


@dataclass
class RawResult:
    produced: Window
    consumed: Window
    bytes: int
    cpu: dict[str, float]


async def produce(bootstrap: str, topic: str, payload: list) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for value, key, headers in payload:
            futures.append(await producer.send(topic, value, key=key, headers=headers))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, partitions: int) -> tuple[int, float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        started = time.perf_counter()
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        count = await drain_to(consumer, {tp for tp in parts if ends[tp]}, ends, lambda r: None)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


async def phase_raw(args, prefix: str, records: list, report) -> RawResult:
    topic = f"{prefix}.raw"
    await create_topic(args.bootstrap, topic, args.partitions)
    payload = [(r.value, r.key, list(r.headers)) for r in records]
    meter = CpuMeter.with_stack({"bench client": os.getpid()}, args.stack_home)
    produce_s = await produce(args.bootstrap, topic, payload)
    cpu = meter.stop()
    count, consume_s = await consume(args.bootstrap, topic, args.partitions)
    if count != len(payload):
        report.errors.append(f"phase 3: read {count} records back, produced {len(payload)}")
    return RawResult(Window(len(payload), produce_s, "records"), Window(count, consume_s, "records"),
                     sum(len(v) for v, _, _ in payload), cpu)
