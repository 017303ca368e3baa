"""Two projector processes in one group (docs/scaling.md): a poll whose records the other stored first is refused.

In a rebalance the old owner of a partition may still be storing a poll when the new owner has read the position;
PostgresProjection.apply takes a lock per partition and refuses (PositionMoved, nothing written) a batch whose
first record is behind the stored position, so whichever stores second reads again instead of doubling rows.
"""
import asyncio

import pytest

from infra.adapters.postgres import open_pool
from projectors.base import Batch, PositionMoved
from projectors.channels import ChannelsProjection
from tests.support import make_settings, wait_until

WAITING = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2
             AND objid = %s AND classid = (hashtext(%s)::bigint & 4294967295)::oid"""


@pytest.fixture
async def two():
    """Two writers of one read model, as two processes of one group would be (one pool: the same database)."""
    settings = make_settings()
    pool = await open_pool(settings)
    try:
        yield pool, [await ChannelsProjection(pool, settings.topic_prefix).open() for _ in range(2)]
    finally:
        await pool.close()


def positions_of(stored) -> dict[int, int]:
    return {p: pos.next_offset for p, pos in stored.items()}


async def test_a_batch_behind_the_stored_position_is_refused_and_nothing_of_its_poll_is_written(two):
    _, (first, second) = two
    await first.apply([Batch(0, [], 5, 0), Batch(1, [], 3, 0)])
    with pytest.raises(PositionMoved, match=r"\(0, 5\)"):
        await second.apply([Batch(0, [], 7, 2), Batch(1, [], 4, 3)])  # partition 0 was stored past offset 2
    assert positions_of(await second.positions()) == {0: 5, 1: 3}  # partition 1's batch was not stored either
    await second.apply([Batch(0, [], 7, 5)])  # continuing from the stored position is fine
    await second.apply([Batch(1, [], 6, 3), Batch(2, [], 2, 0)])  # and so is a partition never stored before
    assert positions_of(await first.positions()) == {0: 7, 1: 6, 2: 2}


async def test_two_stores_of_one_partition_at_once_are_serialised_and_the_second_is_refused(two):
    # Both polls start at offset 7 and are in their transactions at once (held at the partition's lock by a
    # third connection until both wait on it): without the lock, both would read position 7 and both would land.
    pool, (first, second) = two
    await first.apply([Batch(0, [], 7, 0)])
    key = (0, f"{first.schema}.positions")
    async with pool.connection() as gate, pool.connection() as watcher:
        await gate.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (key[1], key[0]))
        racing = [asyncio.create_task(first.apply([Batch(0, [], 9, 7)])),
                  asyncio.create_task(second.apply([Batch(0, [], 8, 7)]))]

        async def both_waiting():
            count = (await (await watcher.execute(WAITING, key)).fetchone())[0]
            await watcher.rollback()
            return count == 2
        await wait_until(both_waiting, 30, "both stores waiting on the partition's lock")
        await gate.commit()  # releases the lock: one store goes first, the other then finds the position moved
    raced = await asyncio.gather(*racing, return_exceptions=True)
    assert sorted(type(r).__name__ for r in raced) == ["NoneType", "PositionMoved"]
    assert (await first.positions())[0].next_offset == (9 if raced[0] is None else 8)
