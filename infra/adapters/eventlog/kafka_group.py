"""The Kafka adapter's group consumer, and the mapping of aiokafka's errors and types to the port's
(infra/adapters/eventlog/kafka.py builds it; memory_group.py is its twin).
"""
import logging
from contextlib import contextmanager
from typing import Awaitable, Callable, Iterator

import aiokafka
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from infra.adapters.backoff import Backoff, patiently
from infra.adapters.eventlog.port import Fenced, GroupConsumer, LogError, Moved, NotAssigned, Record, TopicPartition

log = logging.getLogger("runledger.eventlog")


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


async def starting(patience: Backoff | None, attempt: Callable[[], Awaitable[None]]) -> None:
    """attempt() once (its LogError is the caller's), or with patience until it succeeds."""
    if patience is None:
        return await attempt()
    await patiently("the broker", attempt, (LogError,), patience, log)


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
    def __init__(self, make: Callable[[], AIOKafkaConsumer], topics: list[str], on_assigned: Moved,
                 on_revoked: Moved, patience: Backoff | None = None, group: str = ""):
        """`make`: a new, unstarted consumer; a start that fails is retried on a fresh one."""
        self.make, self.topics, self.patience, self.group = make, topics, patience, group
        self.listener = _Listener(self, on_assigned, on_revoked)
        self.moves = 0
        self.consumer = self.subscribed()

    def subscribed(self) -> AIOKafkaConsumer:
        consumer = self.make()
        consumer.subscribe(self.topics, listener=self.listener)
        return consumer

    async def start(self) -> None:
        await starting(self.patience, self.connect)

    async def connect(self) -> None:
        try:
            with ported("cannot join the consumer group"):
                await self.consumer.start()
        except LogError:
            # A start that got past bootstrap (the group refused the join: a session timeout under the broker's
            # floor, a coordinator not ready) leaves its fetcher behind, and aiokafka refuses a second start.
            await self.consumer.stop()
            self.consumer = self.subscribed()
            raise

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

    def group_metadata(self) -> str:
        return self.group
