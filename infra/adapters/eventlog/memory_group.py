"""Consumer groups of the in-memory event log: members, eager rebalances as tasks of their own, expulsion.

A rebalance tells every member what it loses (its old assignment stays current meanwhile, as in
aiokafka), then gives each its round-robin share of the sorted partitions.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

from infra.adapters.eventlog.port import GroupConsumer, Moved, OwnAssignment, Record, TopicPartition

if TYPE_CHECKING:
    from infra.adapters.eventlog.memory import MemoryLog


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


class MemoryConsumer(OwnAssignment, GroupConsumer):
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

    def group_metadata(self) -> str:
        return self.group.name
