"""Kafka and PostgreSQL plumbing for benchmarks: settings on the bench's own prefix, topics, reads, cleanup."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm

from infra.adapters import kafka
from infra.adapters.settings import Settings


def bench_settings(bootstrap: str, prefix: str, partitions: int, secret: str,
                   database_url: str | None = None, **extra: Any) -> Settings:
    """Settings on the bench's broker and prefix, checked, so a bench never touches some other broker."""
    given = {"RUNLEDGER_KAFKA_BOOTSTRAP": bootstrap}
    if database_url:
        given["RUNLEDGER_DATABASE_URL"] = database_url
    settings = Settings(**given, topic_prefix=prefix, partitions=partitions, jwt_secret=secret, **extra)
    if (settings.kafka_bootstrap, settings.topic_prefix) != (bootstrap, prefix):
        raise RuntimeError(f"settings did not take the bench broker/prefix: {settings!r}")
    if database_url and settings.database_url != database_url:
        raise RuntimeError("settings did not take the bench database")
    return settings


def tps(settings: Settings, topic: str | None = None) -> list[TopicPartition]:
    return [TopicPartition(topic or settings.events_topic, p) for p in range(settings.partitions)]


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce_all(bootstrap: str, records: Iterable[dict[str, Any]]) -> None:
    """Produce records (each send()'s keyword arguments: topic, value, key, ...) in bulk on an idempotent producer,
    awaiting the deliveries every 5,000."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        for record in records:
            futures.append(await producer.send(**record))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def delete_topics(bootstrap: str, prefixes: list[str]) -> None:
    """Delete every topic named `<prefix>.…` for one of the prefixes."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if any(t.startswith(p + ".") for p in prefixes)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def read_range(settings: Settings, topic: str, on_record: Callable[[Any], None],
                     start: dict[int, int] | None = None, desc: str = "", progress: bool = False) -> int:
    """Feed on_record every committed record of topic from start offsets (default 0) to the current end."""
    consumer = kafka.reader(settings)
    await consumer.start()
    try:
        parts = tps(settings, topic)
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        first = {tp: (start or {}).get(tp.partition, 0) for tp in parts}
        for tp in parts:
            consumer.seek(tp, first[tp])
        with tqdm(desc=desc, unit="rec", disable=not progress, leave=False) as bar:
            return await drain_to(consumer, {tp for tp in parts if ends[tp] > first[tp]}, ends, on_record, bar)
    finally:
        await consumer.stop()


async def drain_to(consumer, remaining: set, ends: dict, on_record: Callable[[Any], None], bar: Any = None) -> int:
    """Read the remaining partitions up to their end offsets; return how many records."""
    count = 0
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    on_record(record)
                    count += 1
            if bar is not None:
                bar.update(len(records))
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
    return count


async def timed_read(settings: Settings, topic: str, on_record: Callable[[Any], None], desc: str,
                     progress: bool) -> tuple[int, float]:
    """read_range from offset 0; return (records, seconds)."""
    started = time.perf_counter()
    count = await read_range(settings, topic, on_record, None, desc, progress)
    return count, time.perf_counter() - started


class EndOffsets:
    """One long-lived read_committed consumer for log end offsets (cheaper than a new one per call)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.consumer = kafka.reader(settings)

    async def start(self) -> "EndOffsets":
        await self.consumer.start()
        return self

    async def __call__(self, topic: str | None = None) -> dict[int, int]:
        ends = await self.consumer.end_offsets(tps(self.settings, topic))
        return {tp.partition: o for tp, o in ends.items()}

    async def stop(self) -> None:
        await self.consumer.stop()


def drop_read_models(database_url: str, prefixes: list[str]) -> None:
    """Drop the read-model schemas (`<prefix>…`) and registry rows (`<prefix>…:<name>`) of the bench's prefixes."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url, autocommit=True) as conn:
        registry = conn.execute("SELECT to_regclass('public.runledger_projections')").fetchone()[0]
        for prefix in prefixes:
            for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                          (prefix.lower() + "%",)).fetchall():
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            if registry:
                conn.execute("DELETE FROM public.runledger_projections WHERE name LIKE %s", (prefix + "%",))
