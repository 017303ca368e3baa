"""The event log port on Apache Kafka, through aiokafka (the adapter that production runs).

aiokafka's own errors are mapped to the port's: ProducerFenced to Fenced, IllegalStateError (a
partition that is not assigned) to NotAssigned, every other KafkaError to LogError, so callers
never import aiokafka. The consumer's generation counts the rebalance callbacks this adapter sees.
"""
import asyncio
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Awaitable, Iterator

import aiokafka
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from infra.adapters import kafka
from infra.adapters.eventlog.port import (Delivered, EventLog, Fenced, GroupConsumer, LogError, Moved, NotAssigned,
                                         PartitionReader, Producer, Record, Tail, TopicPartition,
                                         TransactionalWriter)
from infra.adapters.settings import Settings


@contextmanager
def ported(doing: str | None = None) -> Iterator[None]:
    """Raise aiokafka's errors as the port's: Fenced, NotAssigned, or LogError (saying what failed)."""
    try:
        yield
    except ProducerFenced as error:
        raise Fenced(repr(error)) from error
    except IllegalStateError as error:
        raise NotAssigned(str(error)) from error
    except KafkaError as error:
        raise LogError(f"{doing}: {error!r}" if doing else repr(error)) from error


def ours(tp) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def theirs(tp: TopicPartition) -> aiokafka.TopicPartition:
    return aiokafka.TopicPartition(tp.topic, tp.partition)


def record_of(r) -> Record:
    return Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, consumer: "KafkaGroupConsumer", on_assigned: Moved, on_revoked: Moved):
        self.consumer, self.on_assigned, self.on_revoked = consumer, on_assigned, on_revoked

    async def on_partitions_revoked(self, revoked):
        self.consumer.moves += 1
        await self.on_revoked({ours(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned):
        self.consumer.moves += 1
        await self.on_assigned({ours(tp) for tp in assigned})


class KafkaGroupConsumer(GroupConsumer):
    def __init__(self, consumer: AIOKafkaConsumer, topics: list[str], on_assigned: Moved, on_revoked: Moved):
        self.consumer = consumer
        self.moves = 0
        consumer.subscribe(topics, listener=_Listener(self, on_assigned, on_revoked))

    async def start(self) -> None:
        with ported("cannot join the consumer group"):
            await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    def assignment(self) -> set[TopicPartition]:
        return {ours(tp) for tp in self.consumer.assignment()}

    @property
    def generation(self) -> int:
        return self.moves

    def pause(self, *tps: TopicPartition) -> None:
        self.assigned_only(self.consumer.pause, tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.assigned_only(self.consumer.resume, tps)

    def paused(self) -> set[TopicPartition]:
        return {ours(tp) for tp in self.consumer.paused()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.assigned_only(lambda t: self.consumer.seek(t, offset), (tp,))

    def assigned_only(self, action, tps) -> None:
        with ported():
            for tp in tps:
                action(theirs(tp))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        with ported():
            fetched = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {ours(tp): [record_of(r) for r in records] for tp, records in fetched.items() if records}

    async def committed(self, tp: TopicPartition) -> int | None:
        with ported():
            return await self.consumer.committed(theirs(tp))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with ported():
            await self.consumer.commit({theirs(tp): OffsetAndMetadata(o, "") for tp, o in offsets.items()})

    async def position(self, tp: TopicPartition) -> int:
        with ported():
            return await self.consumer.position(theirs(tp))


class KafkaWriter(TransactionalWriter):
    def __init__(self, settings: Settings, transactional_id: str):
        self.producer = kafka.transactional_producer_for(settings, transactional_id)

    async def start(self) -> None:
        with ported():
            await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        with ported():
            async with self.producer.transaction():
                yield

    async def send(self, topic: str, value: bytes, key: bytes | None, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[None]:
        with ported():
            return await self.producer.send(topic, value=value, key=key, partition=partition, headers=headers)

    async def send_offsets(self, offsets: dict[TopicPartition, int], group: str) -> None:
        with ported():
            await self.producer.send_offsets_to_transaction({theirs(tp): o for tp, o in offsets.items()}, group)


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
    def __init__(self, settings: Settings):
        self.producer = kafka.command_producer(settings)  # idempotent, acks=all, no transactional id

    async def start(self) -> None:
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
    def __init__(self, settings: Settings, topic: str):
        self.settings, self.topic = settings, topic
        self.consumer = kafka.reader(settings)

    async def start(self) -> None:
        with ported(f"cannot tail {self.topic}"):
            await self.consumer.start()
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
    def __init__(self, settings: Settings):
        self.settings = settings

    def group_consumer(self, topics: list[str], group: str, on_assigned: Moved, on_revoked: Moved,
                       max_poll_records: int = 500, **tuning: int) -> GroupConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest", max_poll_records=max_poll_records,
            **tuning)
        return KafkaGroupConsumer(consumer, topics, on_assigned, on_revoked)

    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        return KafkaWriter(self.settings, transactional_id)

    def reader(self) -> PartitionReader:
        return KafkaReader(self.settings)

    def producer(self) -> Producer:
        return KafkaProducer(self.settings)

    def tail(self, topic: str) -> Tail:
        return KafkaTail(self.settings, topic)

    async def partitions(self, topic: str) -> list[int]:
        with ported(f"cannot describe {topic}"):
            return sorted(await kafka.partitions_of(self.settings, topic))

    async def ensure_topics(self) -> None:
        with ported("cannot create the ledger topics"):
            await kafka.ensure_topics(self.settings)
