"""What the PostgreSQL projection's fence (projectors/pg.py, fence) covers beyond a poll behind the stored position.

* The first polls of a partition that has no stored position yet: serialised on the partition's lock like any
  other, the second finds the position the first stored and is refused (PositionMoved), writing nothing.
* A held tenant's catch-up (`resume`), which moves no position: it is fenced by the hold itself. Its
  transaction locks the hold row and is refused (HoldMoved, nothing written) if another process released or
  changed the hold, replayed the tenant (its head moved), or stored the partition past the catch-up's end.
* A poll that passes over a tenant held in this process's memory is refused if another process released it
  meanwhile: the passed-over records would otherwise never be applied.

The two "processes" are two projections (and runners) on one pool; the log is an in-memory one both read.
"""
import asyncio

import pytest

from infra.adapters.eventlog import TopicPartition
from infra.adapters.eventlog.memory import MemoryLog
from infra.adapters.postgres import open_pool
from projectors.base import Batch, Hold
from projectors.pg import PostgresProjection
from projectors.runner import ProjectorRunner
from schemas.envelope import encode
from tests.integration.test_projector_fence import WAITING
from tests.support import make_settings, wait_until
from tests.unit.test_projector_halts import tenant_chain

ACME = tenant_chain("acme", 4)


class Tally(PostgresProjection):
    """A read model of one row per stored event and no key: an event stored twice shows as two rows."""
    name = "tally"
    ddl = "CREATE TABLE IF NOT EXISTS {s}.seen (tenant_id text NOT NULL, chain_seq bigint NOT NULL)"

    def statements(self, env):
        return [(f"INSERT INTO {self.schema}.seen VALUES (%s, %s)", (env["tenant_id"], env["chain_seq"]))]


class Consumer:
    """The group consumer as the runner uses it between polls: one partition assigned."""

    def __init__(self, tp: TopicPartition):
        self.tp, self.paused, self.seeks = tp, set(), {}

    def assignment(self):
        return {self.tp}

    def pause(self, *tps):
        self.paused.update(tps)

    def resume(self, *tps):
        self.paused.difference_update(tps)

    def seek(self, tp, offset):
        self.seeks[tp] = offset

    async def position(self, tp):
        return 0

    async def commit(self, offsets):
        return None


class GatedLog(MemoryLog):
    """A log whose replays (reader.read) stop after their last record until `go` is set, saying so in `waiting`."""

    def __init__(self, topic: str):
        super().__init__([topic], 1)
        self.go, self.waiting = asyncio.Event(), asyncio.Semaphore(0)
        self.gated = False

    def reader(self):
        reader, log = super().reader(), self

        class Gated(type(reader)):
            async def read(self, tp, start=0, end=None):
                async for record in super().read(tp, start, end):
                    yield record
                if log.gated:
                    log.waiting.release()
                    await log.go.wait()
        return Gated(self)


@pytest.fixture
async def world():
    """Two processes' runners of the tally read model on one database, and acme held at offset 1 (chain_seq 2).

    In the log: acme's chain_seq 1..3 at offsets 0..2. Stored: chain_seq 1, position 3 (chain_seq 3 was passed
    over), acme's hold at (partition 0, offset 1, chain_seq 2), and ops' request to resume it."""
    settings = make_settings(partitions=1)
    pool = await open_pool(settings)
    log = GatedLog(settings.events_topic)
    tp = TopicPartition(settings.events_topic, 0)
    for env in ACME[:3]:
        log.produce(settings.events_topic, b"acme", encode(env), partition=0)
    try:
        runners = []
        for _ in range(2):
            r = ProjectorRunner(settings, await Tally(pool, settings.topic_prefix).open(), log_=log)
            r.consumer, r.retry_delay_s = Consumer(tp), 0.0
            runners.append(r)
        first = runners[0].projection
        await first.apply([Batch(0, [ACME[0]], 3, 0)], [Hold("acme", 0, 1, 2, "held for the test")])
        assert await first.request_resume("acme")
        for r in runners:
            await r.admission.load()
        yield pool, log, tp, runners
    finally:
        await pool.close()


async def seen(pool, projection) -> list[int]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(f"SELECT chain_seq FROM {projection.schema}.seen WHERE tenant_id = 'acme' "
                                         "ORDER BY chain_seq")).fetchall()
    return [row[0] for row in rows]


async def test_the_first_polls_of_a_partition_with_no_stored_position_are_serialised_and_the_second_refused():
    # Two writers' first polls of partition 0, both from offset 0, both in their transactions at once (held at
    # the partition's lock by a third connection until both wait on it): no position is stored yet.
    settings = make_settings(partitions=1)
    pool = await open_pool(settings)
    try:
        first, second = [await Tally(pool, settings.topic_prefix).open() for _ in range(2)]
        assert await first.positions() == {}
        key = (0, f"{first.schema}.positions")
        async with pool.connection() as gate, pool.connection() as watcher:
            await gate.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (key[1], key[0]))
            racing = [asyncio.create_task(first.apply([Batch(0, ACME[:2], 2, 0)])),
                      asyncio.create_task(second.apply([Batch(0, ACME[:3], 3, 0)]))]

            async def both_waiting():
                count = (await (await watcher.execute(WAITING, key)).fetchone())[0]
                await watcher.rollback()
                return count == 2
            await wait_until(both_waiting, 30, "both stores waiting on the partition's lock")
            await gate.commit()
        raced = await asyncio.gather(*racing, return_exceptions=True)
        assert sorted(type(r).__name__ for r in raced) == ["NoneType", "PositionMoved"]
        winner = 2 if raced[0] is None else 3
        assert ((await first.positions())[0].next_offset, await seen(pool, first)) == (winner, list(range(1, winner + 1)))
    finally:
        await pool.close()


async def test_two_catch_ups_of_one_tenant_at_once_store_its_events_once(world):
    # Both processes replay acme at once (a rebalance landing during a resume): both have read acme's head and
    # the log up to the position before either stores.
    pool, log, tp, (a, b) = world
    log.gated = True
    resumes = [asyncio.create_task(r.resume_requested(every_s=0)) for r in (a, b)]
    for _ in range(2):
        await log.waiting.acquire()
    log.go.set()
    await asyncio.gather(*resumes)
    # One released acme; the other's catch-up was refused, wrote nothing, and it reads the holds again
    assert await seen(pool, a.projection) == [1, 2, 3]
    assert await a.projection.holds() == {}
    assert sorted((r.last_error, bool(r.unpositioned)) for r in (a, b)) == [(None, False), (None, True)]
    for r in (a, b):
        await r.position_assigned()
    assert (a.admission.held, b.admission.held) == ({}, {})


async def test_a_poll_that_passes_over_a_tenant_another_process_released_is_refused_and_read_again(world):
    # a resumes acme and releases it; b, the new owner of partition 0 after a rebalance, still holds acme in memory
    pool, log, tp, (a, b) = world
    await a.resume_requested(every_s=0)
    assert (await a.projection.holds(), "acme" in b.admission.held) == ({}, True)
    later = log.produce(tp.topic, b"acme", encode(ACME[3]), partition=0)
    # b's poll would pass acme's chain_seq 4 over: refused, nothing written, and b reads holds and positions again
    await b.guarded({tp: [later]})
    assert (b.last_error, b.unpositioned) == (None, {tp})
    assert ((await b.projection.positions())[0].next_offset, await seen(pool, b.projection)) == (3, [1, 2, 3])
    await b.position_assigned()
    assert b.admission.held == {}
    await b.guarded({tp: [later]})
    assert ((await b.projection.positions())[0].next_offset, await seen(pool, b.projection)) == (4, [1, 2, 3, 4])


async def test_a_catch_up_is_refused_when_another_process_stored_the_partition_past_its_end(world):
    # a replays acme up to offset 3 (the position when it began); meanwhile b, the new owner of partition 0,
    # stores a poll that passes acme's next event (offset 3) over, as acme is held
    pool, log, tp, (a, b) = world
    log.gated = True
    resuming = asyncio.create_task(a.resume_requested(every_s=0))
    await log.waiting.acquire()
    later = log.produce(tp.topic, b"acme", encode(ACME[3]), partition=0)
    await b.guarded({tp: [later]})
    assert (await b.projection.positions())[0].next_offset == 4
    log.go.set()
    await resuming
    # a's release would leave chain_seq 4 unapplied for good: refused, nothing written, acme still held
    assert (a.last_error, a.unpositioned, "acme" in a.admission.held) == (None, {tp}, True)
    assert (await seen(pool, a.projection), list(await a.projection.holds())) == ([1], ["acme"])
    # b (the owner) resumes acme up to the position it stored: everything, once
    log.gated = False
    await b.resume_requested(every_s=0)
    assert (b.last_error, await b.projection.holds(), b.admission.held) == (None, {}, {})
    assert await seen(pool, b.projection) == [1, 2, 3, 4]
