"""The Projection contract: what the runner and a rebuild may rely on, whichever store keeps the read model.

Each store's test module subclasses ProjectionContract (model: eventsourcing tests/persistence.py)
and says how to build its contract projection, a read model of one row per event
(tenant_id, chain_seq, note), and how to read those rows back. Every contract projection has a
fuse: after `projection.fuse = n`, its next row write writes the first n rows of the poll, then
raises Crash, as a store failing mid-poll would.

PostgreSQL and the memory twin apply a poll all or nothing. ClickHouse has no transactions, so
there the contract is idempotence: re-applying a poll gives the same rows, and positions, heads and
holds move only with the poll's final block.
"""
import uuid
from abc import ABC, abstractmethod

import pytest

from projectors.base import Batch, Hold, Position
from projectors.generations import Generational, SchemaSwapped, generation_name
from schemas.envelope import GENESIS_HASH, seal
from tests.unit.test_envelope import unsealed


class Crash(RuntimeError):
    """What a contract projection's row write raises when its fuse blows."""


def chain(tenant: str, length: int) -> list[dict]:
    """A sealed chain of one tenant, each event noting its tenant and chain_seq, recorded a second apart."""
    envelopes, prev = [], GENESIS_HASH
    for seq in range(1, length + 1):
        env = seal({**unsealed(seq, prev, note=f"{tenant}{seq}"), "tenant_id": tenant,
                    "recorded_at": f"2026-11-22T10:00:{seq:02d}.000000Z"})
        envelopes.append(env)
        prev = env["hash"]
    return envelopes


A, B, C = chain("a", 4), chain("b", 2), chain("c", 3)
HOLD = Hold("c", 1, 7, 2, "partition 1 offset 7, tenant c chain_seq 2: the hash does not recompute")


def notes(envelopes: list[dict]) -> list[tuple[str, int, str]]:
    return sorted((e["tenant_id"], e["chain_seq"], e["payload"]["note"]) for e in envelopes)


def offsets(positions: dict[int, Position]) -> dict[int, tuple[int, str | None]]:
    return {p: (pos.next_offset, pos.last_recorded_at) for p, pos in positions.items()}


def held(holds: dict[str, Hold]) -> dict[str, tuple]:
    """The holds without held_at, which the store stamps."""
    return {t: (h.partition, h.offset, h.chain_seq, h.reason, h.resume_requested) for t, h in holds.items()}


class ProjectionContract(ABC):
    atomic = True  # whether apply is all or nothing (else: idempotent, bookkeeping in its final block)

    @abstractmethod
    def projection(self, prefix: str) -> Generational:
        """Return an unopened contract projection of this store, in the deployment named prefix."""

    @abstractmethod
    async def rows(self, projection: Generational) -> list[tuple[str, int, str]]:
        """Return the rows of the projection's generation as (tenant_id, chain_seq, note), sorted."""

    @pytest.fixture
    def prefix(self) -> str:
        return f"contract{uuid.uuid4().hex[:10]}"

    async def writer(self, prefix: str) -> Generational:
        return await self.projection(prefix).open()

    async def state(self, projection: Generational) -> dict:
        return {"rows": await self.rows(projection), "positions": offsets(await projection.positions()),
                "heads": {t: await projection.head(t) for t in "abc"}, "holds": held(await projection.holds())}

    async def test_positions_start_empty_and_advance_with_each_apply(self, prefix):
        writer = await self.writer(prefix)
        assert await writer.positions() == {}
        await writer.apply([Batch(0, A[:2], 2), Batch(1, B[:1], 7)])
        await writer.apply([Batch(0, A[2:3], 3)])
        expected = {0: (3, A[2]["recorded_at"]), 1: (7, B[0]["recorded_at"])}
        assert offsets(await writer.positions()) == expected
        assert offsets(await (await self.writer(prefix)).positions()) == expected  # as a restarted writer reads them
        assert await self.rows(writer) == notes(A[:3] + B[:1])

    async def test_each_tenants_head_is_its_highest_chain_seq_and_that_events_hash(self, prefix):
        writer = await self.writer(prefix)
        assert await writer.head("a") == (0, GENESIS_HASH)
        await writer.apply([Batch(0, A[:2] + B[:1], 3)])
        await writer.apply([Batch(0, A[2:3], 4)])
        assert [await writer.head(t) for t in ("a", "b", "c")] == [(3, A[2]["hash"]), (1, B[0]["hash"]),
                                                                   (0, GENESIS_HASH)]

    async def test_a_batch_without_next_offset_moves_heads_but_no_position(self, prefix):
        writer = await self.writer(prefix)
        await writer.apply([Batch(0, A[:1], 1)])
        await writer.apply([Batch(0, A[1:3], None)])  # a held tenant's catch-up: its partition moved on already
        assert offsets(await writer.positions()) == {0: (1, A[0]["recorded_at"])}
        assert (await writer.head("a"), await self.rows(writer)) == ((3, A[2]["hash"]), notes(A[:3]))

    async def test_apply_is_all_or_nothing(self, prefix):
        if not self.atomic:
            pytest.skip("no transactions in this store: its contract is idempotence (the next case)")
        writer = await self.writer(prefix)
        await writer.apply([Batch(0, A[:1], 1)])
        before = await self.state(writer)
        writer.fuse = 2
        with pytest.raises(Crash):
            await writer.apply([Batch(0, A[1:3], 3), Batch(1, B, 2)], holds=[HOLD])
        assert await self.state(writer) == before

    async def test_a_poll_that_fails_mid_write_keeps_its_bookkeeping_back_and_replays_to_the_same_rows(self, prefix):
        writer = await self.writer(prefix)
        await writer.apply([Batch(0, A[:1], 1)])
        before = await self.state(writer)
        poll = [Batch(0, A[1:3], 3), Batch(1, B, 2)]
        writer.fuse = 2
        with pytest.raises(Crash):
            await writer.apply(poll, holds=[HOLD])
        assert {k: v for k, v in (await self.state(writer)).items() if k != "rows"} == \
               {k: v for k, v in before.items() if k != "rows"}
        await writer.apply(poll, holds=[HOLD])
        once = await self.state(writer)
        await writer.apply(poll, holds=[HOLD])
        assert await self.state(writer) == once
        assert once == {"rows": notes(A[:3] + B),
                        "positions": {0: (3, A[2]["recorded_at"]), 1: (2, B[1]["recorded_at"])},
                        "heads": {"a": (3, A[2]["hash"]), "b": (2, B[1]["hash"]), "c": (0, GENESIS_HASH)},
                        "holds": held({"c": HOLD})}

    async def test_a_failure_is_kept_until_cleared(self, prefix):
        writer = await self.writer(prefix)
        assert await writer.failure() is None
        await writer.record_failure("projector notes stopped: partition 0 offset 3 names no tenant")
        assert await (await self.writer(prefix)).failure() == "projector notes stopped: partition 0 offset 3 names no tenant"
        await writer.record_failure(None)
        assert await writer.failure() is None

    async def test_a_hold_is_kept_with_its_poll_asked_to_resume_and_released_by_the_catch_up(self, prefix):
        writer = await self.writer(prefix)
        await writer.apply([Batch(0, A[:2], 2), Batch(1, C[:1], 8)], holds=[HOLD])
        holds = await writer.holds()
        assert held(holds) == {"c": (1, 7, 2, HOLD.reason, False)} and holds["c"].held_at is not None
        assert (await writer.request_resume("c"), await writer.request_resume("a")) == (True, False)
        assert held(await writer.holds()) == {"c": (1, 7, 2, HOLD.reason, True)}
        await writer.apply([Batch(1, C[1:], None)], released="c")
        assert await writer.holds() == {}
        assert offsets(await writer.positions()) == {0: (2, A[1]["recorded_at"]), 1: (8, C[0]["recorded_at"])}
        assert (await writer.head("c"), await self.rows(writer)) == ((3, C[2]["hash"]), notes(A[:2] + C))

    async def test_probe_raises_what_applying_raises_and_keeps_nothing(self, prefix):
        writer = await self.writer(prefix)
        await writer.apply([Batch(0, A[:1], 1)])
        before = await self.state(writer)
        await writer.probe(A[1:] + B)
        writer.fuse = 1
        with pytest.raises(Crash):
            await writer.probe(A[1:] + B)
        assert await self.state(writer) == before

    async def test_the_registry_names_generation_1_once_and_then_what_a_swap_named(self, prefix):
        await self.writer(f"{prefix}other")  # another deployment's, so that the registry itself exists
        first = self.projection(prefix)
        assert await first.generations.live(first.name) is None
        await first.open()
        layout = generation_name(prefix, first.name, 1)
        assert (layout, await first.generations.live(first.name)) == (f"{prefix}_{first.name}_g1", (layout, 1))
        assert (await self.writer(prefix)).location == layout
        await (await first.fresh_generation(2)).go_live()
        assert (await self.writer(prefix)).location == generation_name(prefix, first.name, 2)

    async def test_a_swap_moves_readers_to_the_rebuilt_generation_and_stops_the_old_writer(self, prefix):
        live = await self.writer(prefix)
        await live.apply([Batch(0, A[:2], 2)])
        target = await live.fresh_generation(await live.live_generation() + 1)
        assert (target.pinned_generation, await live.live_generation(), await target.positions()) == (2, 1, {})
        await target.apply([Batch(0, A[:3], 3)])
        await live.apply([Batch(0, A[2:3], 3)])  # generation 1 is still live: its writer carries on
        await target.go_live()
        assert (await live.live_generation(), await live.generations.live(live.name)) == (2, (target.location, 2))
        with pytest.raises(SchemaSwapped):
            await live.apply([Batch(0, A[3:], 4)])
        assert await self.rows(live) == notes(A[:3])
        await live.open()  # as the runner does on SchemaSwapped
        assert (live.location, offsets(await live.positions())) == (target.location, {0: (3, A[2]["recorded_at"])})
        await live.apply([Batch(0, A[3:], 4)])
        assert await self.rows(target) == notes(A)
