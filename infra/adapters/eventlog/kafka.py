"""The event log port on Apache Kafka, through aiokafka (the adapter that production runs).

aiokafka's own errors are mapped to the port's: ProducerFenced to Fenced, IllegalStateError (a
partition that is not assigned) to NotAssigned, every other KafkaError to LogError, so callers
never import aiokafka (kafka_group.py: the mapping, and the group consumer, whose generation counts the rebalance
callbacks this adapter sees).

A log given `patience` (the roles' logs, infra/entry/bootstrap.py) waits out a broker that is down
when a role starts: creating the topics and starting a group consumer, the plain producer or a tail
try again with its backoff (infra/adapters/backoff.py) instead of raising. A log without patience
(one-shot commands, the unit tests) raises LogError at once, as before.
"""
import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable

import aiokafka
from aiokafka import AIOKafkaConsumer

from infra.adapters import kafka
from infra.adapters.backoff import Backoff
from infra.adapters.eventlog.kafka_group import KafkaGroupConsumer, ours, ported, record_of, starting, theirs
from infra.adapters.eventlog.port import (Delivered, EventLog, GroupConsumer, LogError, Moved, PartitionReader,
                                         Producer, Record, Tail, TopicPartition, TransactionalWriter)
from infra.adapters.settings import Settings


class KafkaWriter(TransactionalWriter):
    """Every send of a transaction is awaited before its offsets are added and before it commits (aiokafka#1098:
    offsets added while sends are still in flight can race the commit), so callers need not await them."""

    def __init__(self, settings: Settings, transactional_id: str):
        self.producer = kafka.transactional_producer_for(settings, transactional_id)
        self.inflight: list[Awaitable] = []

    async def start(self) -> None:
        with ported():
            await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.inflight = []
        try:
            with ported():
                async with self.producer.transaction():
                    yield
                    await self.delivered()
        finally:
            self.inflight = []

    async def delivered(self) -> None:
        sends, self.inflight = self.inflight, []
        await asyncio.gather(*sends)

    async def send(self, topic: str, value: bytes, key: bytes | None, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[None]:
        with ported():
            queued = await self.producer.send(topic, value=value, key=key, partition=partition, headers=headers)
        self.inflight.append(queued)
        return queued

    async def send_offsets(self, offsets: dict[TopicPartition, int], consumer: GroupConsumer) -> None:
        with ported():
            await self.delivered()
            await self.producer.send_offsets_to_transaction({theirs(tp): o for tp, o in offsets.items()},
                                                            consumer.group_metadata())


class KafkaReader(PartitionReader):
    def __init__(self, settings: Settings):
        self.consumer = kafka.reader(settings, fetch_max_wait_ms=10)
        self.assigned: set[aiokafka.TopicPartition] = set()

    async def start(self) -> None:
        with ported("cannot connect a reader"):
            await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        with ported("cannot read the end offsets"):
            ends = await self.consumer.end_offsets([theirs(tp) for tp in tps])
        return {ours(tp): offset for tp, offset in ends.items()}

    async def read(self, tp: TopicPartition, start: int = 0, end: int | None = None) -> AsyncIterator[Record]:
        wanted = theirs(tp)
        if wanted not in self.assigned:
            self.assigned.add(wanted)
            self.consumer.assign(sorted(self.assigned))
        async for r in kafka.read_partition(self.consumer, wanted, start, end):
            yield record_of(r)


class KafkaProducer(Producer):
    def __init__(self, settings: Settings, patience: Backoff | None = None):
        self.producer = kafka.command_producer(settings)  # idempotent, acks=all, no transactional id
        self.patience = patience

    async def start(self) -> None:
        await starting(self.patience, self.connect)

    async def connect(self) -> None:
        with ported("cannot connect a producer"):
            await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, topic: str, value: bytes, key: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Delivered]:
        with ported(f"cannot send to {topic}"):
            queued = await self.producer.send(topic, value=value, key=key, headers=headers)
        return asyncio.ensure_future(self.delivered(topic, queued))

    @staticmethod
    async def delivered(topic: str, queued: Awaitable) -> Delivered:
        with ported(f"cannot deliver to {topic}"):
            metadata = await queued
        return Delivered(metadata.topic, metadata.partition, metadata.offset)


class KafkaTail(Tail):
    def __init__(self, settings: Settings, topic: str, patience: Backoff | None = None):
        self.settings, self.topic, self.patience = settings, topic, patience
        self.consumer = kafka.reader(settings)

    async def start(self) -> None:
        await starting(self.patience, self.connect)
        await starting(self.patience, self.position)

    async def connect(self) -> None:
        with ported(f"cannot tail {self.topic}"):
            await self.consumer.start()

    async def position(self) -> None:
        with ported(f"cannot tail {self.topic}"):
            partitions = sorted(await kafka.partitions_of(self.settings, self.topic))
            if not partitions:
                raise LogError(f"cannot tail {self.topic}: no such topic")
            tps = [aiokafka.TopicPartition(self.topic, p) for p in partitions]
            self.consumer.assign(tps)
            for tp, end in (await self.consumer.end_offsets(tps)).items():  # read_committed: the last stable offsets
                self.consumer.seek(tp, end)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def records(self) -> AsyncIterator[Record]:
        while True:
            with ported(f"cannot read {self.topic}"):
                fetched = await self.consumer.getmany(timeout_ms=500)
            for tp in sorted(fetched):
                for r in fetched[tp]:
                    yield record_of(r)


class KafkaLog(EventLog):
    def __init__(self, settings: Settings, patience: Backoff | None = None):
        """`patience`: wait out a broker that is down at start (roles); None: raise LogError at once."""
        self.settings, self.patience = settings, patience

    def group_consumer(self, topics: list[str], group: str, on_assigned: Moved, on_revoked: Moved,
                       max_poll_records: int = 500, **tuning: int) -> GroupConsumer:
        def make() -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
                isolation_level="read_committed", auto_offset_reset="earliest", max_poll_records=max_poll_records,
                **tuning)
        return KafkaGroupConsumer(make, topics, on_assigned, on_revoked, self.patience, group)

    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        return KafkaWriter(self.settings, transactional_id)

    def reader(self) -> PartitionReader:
        return KafkaReader(self.settings)

    def producer(self) -> Producer:
        return KafkaProducer(self.settings, self.patience)

    def tail(self, topic: str) -> Tail:
        return KafkaTail(self.settings, topic, self.patience)

    async def partitions(self, topic: str) -> list[int]:
        with ported(f"cannot describe {topic}"):
            return sorted(await kafka.partitions_of(self.settings, topic))

    async def ensure_topics(self) -> None:
        await starting(self.patience, self.create_topics)

    async def create_topics(self) -> None:
        with ported("cannot create the ledger topics"):
            await kafka.ensure_topics(self.settings)

    async def session_floor_ms(self) -> int | None:
        """The brokers' group.min.session.timeout.ms (the highest, if they differ); None if it cannot be read now."""
        return await kafka.broker_config_max(self.settings, "group.min.session.timeout.ms")
