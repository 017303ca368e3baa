"""Lag observers of the steady phase: sampled lag per projector, and the probe tenants' heads polled.

LagSampler takes queries/lag.py's definitions (log end offsets − stored positions, in events;
"ms behind" = now − recorded_at of the last applied event when behind) every 100 ms, with one
long-lived consumer for the end offsets and one PostgreSQL query for both PostgreSQL projectors.
ClickHouse positions come from chdb's progress tables only with --ch-observe poll (the reads
compete with the projectors for chdb's lock); by default they are the runners' Kafka committed
offsets (each runner commits its stored position right after storing a poll, for
kafka-consumer-groups), and "ms behind" is resolved afterwards from the events read back.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from aiokafka.admin import AIOKafkaAdminClient

from bench.read.observe import Visibility
from bench.read.workload import CH_NAMES, PG_NAMES
from schemas.envelope import parse_iso

Positions = dict[str, dict[int, tuple[int, str | None]]]  # projector → partition → (next offset, recorded_at)


class ChTimer:
    """The observers' own chdb queries, timed (lock wait included)."""

    def __init__(self, ch):
        self.ch, self.seconds, self.calls = ch, 0.0, 0

    async def query(self, sql: str, params: dict | None = None) -> list[dict]:
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(self.ch.query, sql, params)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


class GroupOffsets:
    """The ClickHouse runners' committed offsets (their consumer groups), as positions without recorded_at."""

    def __init__(self, bootstrap: str, prefix: str):
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.groups = {n: f"{prefix}.projector.{n}" for n in CH_NAMES}

    async def start(self) -> "GroupOffsets":
        await self.admin.start()
        return self

    async def __call__(self) -> Positions:
        out: Positions = {}
        for name, group in self.groups.items():
            offsets = await self.admin.list_consumer_group_offsets(group)
            out[name] = {tp.partition: (meta.offset, None) for tp, meta in offsets.items() if meta.offset >= 0}
        return out

    async def stop(self) -> None:
        await self.admin.close()


@dataclass
class LagSample:
    at: float
    name: str
    behind: int = 0                 # events, summed over partitions
    ms: float = 0.0                 # now − recorded_at of the last applied event, on the worst partition behind
    unresolved: dict[int, int] = field(default_factory=dict)  # partition → position whose recorded_at is unknown


class LagSampler:
    def __init__(self, ends, projections: dict, pool, ch, committed: GroupOffsets | None, every: float = 0.1):
        self.ends, self.pool, self.every, self.committed = ends, pool, every, committed
        self.ch = ChTimer(ch)
        self.samples: list[LagSample] = []
        self.pg_sql = " UNION ALL ".join(
            f"SELECT '{n}', partition, next_offset, last_recorded_at FROM {projections[n].schema}.positions"
            for n in PG_NAMES)
        self.ch_sql = " UNION ALL ".join(
            f"SELECT '{n}' AS p, partition, max(next_offset) AS o, argMax(last_recorded_at, next_offset) AS at "
            f"FROM {projections[n].db}.progress WHERE tenant_id = '' GROUP BY partition" for n in CH_NAMES)

    async def positions(self) -> Positions:
        out: Positions = {n: {} for n in (*PG_NAMES, *CH_NAMES)}
        async with self.pool.connection() as conn:
            for name, partition, offset, at in await (await conn.execute(self.pg_sql)).fetchall():
                out[name][partition] = (offset, at)
        if self.committed:
            return {**out, **await self.committed()}
        for r in await self.ch.query(self.ch_sql):
            out[r["p"]][r["partition"]] = (r["o"], r["at"] or None)
        return out

    async def sample(self) -> dict[str, int]:
        """Take one sample of every projector; return the events each is behind."""
        ends, positions, now = await self.ends(), await self.positions(), time.time()
        for name, pos in positions.items():
            sample = LagSample(now, name)
            for partition, end in ends.items():
                offset, at = pos.get(partition, (0, None))
                lag = max(0, end - offset)
                sample.behind += lag
                if lag and at:
                    sample.ms = max(sample.ms, (now - parse_iso(at).timestamp()) * 1000)
                elif lag:
                    sample.unresolved[partition] = offset
            self.samples.append(sample)
        return {s.name: s.behind for s in self.samples[-len(positions):]}

    def resolve(self, recorded_before: Callable[[int, int], float | None]) -> None:
        """Fill in "ms behind" where only an offset was known: recorded_before(partition, offset) is the
        recorded_at (epoch s) of the last event before that offset, None if it was not read back."""
        for sample in self.samples:
            for partition, offset in sample.unresolved.items():
                if (recorded := recorded_before(partition, offset)) is not None:
                    sample.ms = max(sample.ms, (sample.at - recorded) * 1000)
            sample.unresolved = {}

    def of(self, name: str, t0: float, t1: float) -> list[LagSample]:
        return [s for s in self.samples if s.name == name and t0 <= s.at <= t1]

    async def run(self, stop: asyncio.Event) -> None:
        tick = time.perf_counter()
        while not stop.is_set():
            await self.sample()
            tick += self.every
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))


class HeadProber:
    """Poll the probe tenants' chain heads: PostgreSQL's `heads` always, chdb's `progress` only with --ch-observe poll."""

    def __init__(self, visibility: Visibility, projections: dict, ch, database_url: str, probes: list[str],
                 every: float, ch_every: int | None):
        self.visibility, self.projections, self.url, self.probes = visibility, projections, database_url, probes
        self.every, self.ch_every = every, ch_every  # chdb serialises every statement: poll it less often
        self.ch = ChTimer(ch)
        self.polls = 0
        self.pg_sql = " UNION ALL ".join(f"SELECT '{n}', tenant_id, chain_seq FROM {projections[n].schema}.heads "
                                         "WHERE tenant_id = ANY(%(t)s)" for n in PG_NAMES)
        self.ch_sql = " UNION ALL ".join(f"SELECT '{n}' AS p, tenant_id AS t, max(chain_seq) AS s "
                                         f"FROM {projections[n].db}.progress "
                                         "WHERE tenant_id IN {t:Array(String)} GROUP BY tenant_id" for n in CH_NAMES)

    async def poll(self, conn) -> None:
        at = time.time()
        for name, tenant, seq in await (await conn.execute(self.pg_sql, {"t": self.probes})).fetchall():
            self.visibility.note(at, name, tenant, seq)
        if self.ch_every and self.polls % self.ch_every == 0:
            at = time.time()
            for row in await self.ch.query(self.ch_sql, {"t": self.probes}):
                self.visibility.note(at, row["p"], row["t"], row["s"])
        self.polls += 1

    async def run(self, stop: asyncio.Event) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            tick = time.perf_counter()
            while not stop.is_set():
                await self.poll(conn)
                tick += self.every
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
