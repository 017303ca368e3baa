"""The event log port in memory: the twin that unit tests of ownership, fencing and rebalances run on.

It keeps what the processor relies on from Kafka (infra/adapters/eventlog/port.py): transactions whose
records are invisible until committed and gone when aborted, a last stable offset that holds
readers before an open transaction, epochs per transactional id that fence earlier writers, and
consumer groups whose rebalances run as tasks of their own, so they land between any two awaits
of the code under test, as aiokafka's coordinator does. Eager protocol: every member is revoked
everything, then assigned its share, round-robin over the sorted partitions.

Tests steer it with `before_start` and `before_commit` (awaited inside a writer's start before
it fences, and inside a transaction before it commits), `after_send` (awaited inside a plain
producer's send once the log holds the record, before the send returns), `between_moves` (awaited in a rebalance
after every member was told what it loses and before it is given its share), `Group.expel` (the group drops a member
that stopped heartbeating, without its callbacks: it learns at its next poll), and `settled()`
(await the rebalances under way).
"""
import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from infra.adapters.eventlog.memory_group import Group, MemoryConsumer
from infra.adapters.eventlog.port import (Delivered, EventLog, Fenced, GroupConsumer, LogError, Moved,
                                         PartitionReader, Producer, Record, Tail, TopicPartition,
                                         TransactionalWriter)
from infra.adapters.kafka import partition_for


@dataclass
class Txn:
    state: str = "open"  # open | committed | aborted
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)


@dataclass
class Entry:
    record: Record
    txn: Txn | None  # None: written outside a transaction, committed at once

    @property
    def visible(self) -> bool:
        return self.txn is None or self.txn.state == "committed"


class MemoryLog(EventLog):
    def __init__(self, topics: list[str], partitions: int = 3):
        self.partitions = partitions
        self.topics: dict[str, list[list[Entry]]] = {t: [[] for _ in range(partitions)] for t in topics}
        self.epochs: dict[str, int] = {}
        self.open: dict[str, Txn] = {}
        self.offsets: dict[tuple[str, TopicPartition], int] = {}
        self.groups: dict[str, Group] = {}
        self.before_start: Callable[[str], Awaitable[None]] | None = None
        self.before_commit: Callable[[str], Awaitable[None]] | None = None
        self.between_moves: Callable[[], Awaitable[None]] | None = None
        self.after_send: Callable[[Record], Awaitable[None]] | None = None
        self._wake: asyncio.Event | None = None

    # -- what every client shares --------------------------------------------------------------
    def entries(self, tp: TopicPartition) -> list[Entry]:
        try:
            return self.topics[tp.topic][tp.partition]
        except (KeyError, IndexError):
            raise LogError(f"no partition {tp.partition} of topic {tp.topic!r}") from None

    def stable_end(self, tp: TopicPartition) -> int:
        """The last stable offset: readers stop before the first record of a transaction still open."""
        entries = self.entries(tp)
        return next((i for i, e in enumerate(entries) if e.txn is not None and e.txn.state == "open"), len(entries))

    def visible(self, tp: TopicPartition, start: int, end: int | None = None) -> list[Record]:
        stop = self.stable_end(tp) if end is None else min(end, self.stable_end(tp))
        return [e.record for e in self.entries(tp)[start:stop] if e.visible]

    def append(self, tp: TopicPartition, key: bytes | None, value: bytes, headers, txn: Txn | None) -> None:
        entries = self.entries(tp)
        entries.append(Entry(Record(tp.topic, tp.partition, len(entries), key, value, tuple(headers or ())), txn))

    def notify(self) -> None:
        if self._wake is not None:
            self._wake.set()
        self._wake = asyncio.Event()

    async def changed(self, timeout_s: float) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def settled(self) -> None:
        """Return once no rebalance is under way in any group."""
        while tasks := [g.rebalancing for g in self.groups.values() if g.rebalancing and not g.rebalancing.done()]:
            await asyncio.gather(*tasks)

    # -- the port ----------------------------------------------------------------------------------
    def group_consumer(self, topics: list[str], group: str, on_assigned: Moved, on_revoked: Moved,
                       max_poll_records: int = 500, **tuning: int) -> GroupConsumer:
        return MemoryConsumer(self, self.groups.setdefault(group, Group(self, group, topics)), on_assigned, on_revoked)

    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        return MemoryWriter(self, transactional_id)

    def reader(self) -> PartitionReader:
        return MemoryReader(self)

    def producer(self) -> Producer:
        return MemoryProducer(self)

    def tail(self, topic: str) -> Tail:
        return MemoryTail(self, topic)

    async def ensure_topics(self) -> None:
        return None

    async def partitions(self, topic: str) -> list[int]:
        return list(range(len(self.topics[topic]))) if topic in self.topics else []

    def produce(self, topic: str, key: bytes, value: bytes, partition: int | None = None, headers=None) -> Record:
        """Append a committed record outside any transaction (as the API's producer does), keyed like Kafka."""
        tp = TopicPartition(topic, partition_for(key.decode(), self.partitions) if partition is None else partition)
        self.append(tp, key, value, headers, None)
        self.notify()
        return self.entries(tp)[-1].record


class MemoryWriter(TransactionalWriter):
    def __init__(self, log: MemoryLog, transactional_id: str):
        self.log, self.id = log, transactional_id
        self.epoch: int | None = None
        self.txn: Txn | None = None

    async def start(self) -> None:
        if self.log.before_start is not None:
            await self.log.before_start(self.id)
        self.epoch = self.log.epochs[self.id] = self.log.epochs.get(self.id, 0) + 1
        if (stale := self.log.open.pop(self.id, None)) is not None:
            stale.state = "aborted"
            self.log.notify()

    async def stop(self) -> None:
        if self.txn is not None and self.txn.state == "open" and not self.fenced:
            self.abort()

    @property
    def fenced(self) -> bool:
        return self.epoch != self.log.epochs.get(self.id)

    def check(self) -> None:
        if self.epoch is None:
            raise LogError(f"writer {self.id} was not started")
        if self.fenced:
            raise Fenced(f"transactional id {self.id} was taken over (epoch {self.log.epochs[self.id]} > {self.epoch})")

    def abort(self) -> None:
        self.txn.state = "aborted"
        self.log.open.pop(self.id, None)
        self.log.notify()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.check()
        self.txn = self.log.open[self.id] = Txn()
        try:
            yield
        except BaseException:
            if not self.fenced:
                self.abort()
            raise
        if self.log.before_commit is not None:
            await self.log.before_commit(self.id)
        self.check()
        self.txn.state = "committed"
        self.log.offsets.update(self.txn.offsets)
        self.log.open.pop(self.id, None)
        self.log.notify()

    async def send(self, topic: str, value: bytes, key: bytes | None, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[None]:
        self.check()
        self.log.append(TopicPartition(topic, partition), key, value, headers, self.txn)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    async def send_offsets(self, offsets: dict[TopicPartition, int], consumer: GroupConsumer) -> None:
        self.check()
        group = consumer.group_metadata()
        self.txn.offsets.update({(group, tp): offset for tp, offset in offsets.items()})


class MemoryReader(PartitionReader):
    def __init__(self, log: MemoryLog):
        self.log = log

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.log.stable_end(tp) for tp in tps}

    async def read(self, tp: TopicPartition, start: int = 0, end: int | None = None) -> AsyncIterator[Record]:
        for record in self.log.visible(tp, start, end):
            yield record


class MemoryProducer(Producer):
    def __init__(self, log: MemoryLog):
        self.log = log

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Delivered]:
        if topic not in self.log.topics:
            raise LogError(f"no topic {topic!r}")
        record = self.log.produce(topic, key, value, headers=headers)
        if self.log.after_send is not None:
            await self.log.after_send(record)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(Delivered(record.topic, record.partition, record.offset))
        return delivered


class MemoryTail(Tail):
    def __init__(self, log: MemoryLog, topic: str):
        self.log, self.topic = log, topic
        self.positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        if self.topic not in self.log.topics:
            raise LogError(f"cannot tail {self.topic}: no such topic")
        self.positions = {tp: self.log.stable_end(tp)
                          for tp in (TopicPartition(self.topic, p) for p in range(len(self.log.topics[self.topic])))}

    async def stop(self) -> None:
        return None

    async def records(self) -> AsyncIterator[Record]:
        while True:
            fresh = False
            for tp in self.positions:
                end = self.log.stable_end(tp)  # never moves back: open transactions only start at the end
                for record in self.log.visible(tp, self.positions[tp], end):
                    fresh, self.positions[tp] = True, record.offset + 1
                    yield record
                self.positions[tp] = max(self.positions[tp], end)
            if not fresh:  # nothing awaited since the look: a change from here on wakes it
                await self.log.changed(1.0)
