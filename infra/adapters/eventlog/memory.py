"""The event log port in memory: the twin that unit tests of ownership, fencing and rebalances run on.

It keeps what the processor relies on from Kafka (infra/adapters/eventlog/port.py): transactions whose
records are invisible until committed and gone when aborted, a last stable offset that holds
readers before an open transaction, epochs per transactional id that fence earlier writers, and
consumer groups whose rebalances run as tasks of their own, so they land between any two awaits
of the code under test, as aiokafka's coordinator does. Eager protocol: every member is revoked
everything, then assigned its share, round-robin over the sorted partitions.

Tests steer it with `before_start` and `before_commit` (awaited inside a writer's start before
it fences, and inside a transaction before it commits), `between_moves` (awaited in a rebalance
after every member was told what it loses and before it is given its share), `Group.expel` (the group drops a member
that stopped heartbeating, without its callbacks: it learns at its next poll), and `settled()`
(await the rebalances under way).
"""
import asyncio
import itertools
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from infra.adapters.kafka import partition_for
from infra.adapters.eventlog.port import (EventLog, Fenced, GroupConsumer, LogError, Moved, NotAssigned,
                                 PartitionReader, Record, TopicPartition, TransactionalWriter)


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
        self.groups: dict[str, "Group"] = {}
        self.before_start: Callable[[str], Awaitable[None]] | None = None
        self.before_commit: Callable[[str], Awaitable[None]] | None = None
        self.between_moves: Callable[[], Awaitable[None]] | None = None
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

    async def ensure_topics(self) -> None:
        return None

    async def partitions(self, topic: str) -> list[int]:
        return list(range(len(self.topics[topic]))) if topic in self.topics else []

    def produce(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> Record:
        """Append a committed record outside any transaction (as the API's producer does), keyed like Kafka."""
        tp = TopicPartition(topic, partition_for(key.decode(), self.partitions) if partition is None else partition)
        self.append(tp, key, value, None, None)
        self.notify()
        return self.entries(tp)[-1].record


class Group:
    def __init__(self, log: MemoryLog, name: str, topics: list[str]):
        self.log, self.name, self.topics = log, name, topics
        self.members: list["MemoryConsumer"] = []
        self.rebalancing: asyncio.Task | None = None

    def join(self, member: "MemoryConsumer") -> None:
        self.members.append(member)
        self.rebalance()

    def leave(self, member: "MemoryConsumer") -> None:
        self.members.remove(member)
        self.rebalance()

    def expel(self, member: "MemoryConsumer") -> None:
        """Drop a member as a session timeout does: the others rebalance now, it finds out when it polls."""
        self.members.remove(member)
        member.expelled = True
        self.rebalance()

    def rebalance(self) -> None:
        previous = self.rebalancing
        self.rebalancing = asyncio.get_running_loop().create_task(self.move(previous))

    async def move(self, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        members = list(self.members)
        for member in members:
            if member in self.members:
                await member.revoke()
        if self.log.between_moves is not None:
            await self.log.between_moves()
        partitions = sorted(TopicPartition(t, p) for t in self.topics for p in range(self.log.partitions))
        shares: dict[int, set[TopicPartition]] = {i: set() for i in range(len(members))}
        for tp, i in zip(partitions, itertools.cycle(range(len(members))) if members else ()):
            shares[i].add(tp)
        for i, member in enumerate(members):
            if member in self.members:
                await member.assign(shares[i])
        self.log.notify()


class MemoryConsumer(GroupConsumer):
    def __init__(self, log: MemoryLog, group: Group, on_assigned: Moved, on_revoked: Moved):
        self.log, self.group = log, group
        self.on_assigned, self.on_revoked = on_assigned, on_revoked
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.paused_tps: set[TopicPartition] = set()
        self.moves = 0
        self.expelled = False

    async def start(self) -> None:
        self.group.join(self)

    async def stop(self) -> None:
        if self in self.group.members:
            self.group.leave(self)
            await self.group.rebalancing

    async def revoke(self) -> None:
        """Tell the member what it loses; as in aiokafka, the old assignment stays current until the new one."""
        self.moves += 1
        await self.on_revoked(set(self.assigned))

    async def assign(self, share: set[TopicPartition]) -> None:
        self.assigned = set(share)
        self.positions = {tp: self.log.offsets.get((self.group.name, tp), 0) for tp in share}
        self.paused_tps.clear()
        self.moves += 1
        await self.on_assigned(set(share))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    @property
    def generation(self) -> int:
        return self.moves

    def check(self, tps) -> None:
        if missing := [tp for tp in tps if tp not in self.assigned]:
            raise NotAssigned(f"no current assignment for partition {missing[0]}")

    def pause(self, *tps: TopicPartition) -> None:
        self.check(tps)
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.check(tps)
        self.paused_tps.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.check([tp])
        self.positions[tp] = offset

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if self.expelled:  # as aiokafka finds out from its heartbeat: give everything up, then rejoin
            self.expelled = False
            await self.revoke()
            await self.assign(set())
            self.group.join(self)
            return {}
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        while True:
            fetched = self.fetch(max_records)
            left = deadline - asyncio.get_running_loop().time()
            if fetched or left <= 0:
                return fetched
            await self.log.changed(left)

    def fetch(self, max_records: int) -> dict[TopicPartition, list[Record]]:
        fetched: dict[TopicPartition, list[Record]] = {}
        for tp in sorted(self.assigned - self.paused_tps):
            records = self.log.visible(tp, self.positions[tp])[:max_records - sum(map(len, fetched.values()))]
            if records:
                fetched[tp] = records
                self.positions[tp] = records[-1].offset + 1
        return fetched

    async def committed(self, tp: TopicPartition) -> int | None:
        self.check([tp])
        return self.log.offsets.get((self.group.name, tp))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.check(offsets)
        self.log.offsets.update({(self.group.name, tp): offset for tp, offset in offsets.items()})

    async def position(self, tp: TopicPartition) -> int:
        self.check([tp])
        return self.positions[tp]


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

    async def send_offsets(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self.check()
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
