"""A resume that fails part way leaves its tenant held exactly as it was (projectors/admit.py, Admission.resume).

The store failing during the replay (a database gone, a lock timeout) must not release the tenant in memory
while its hold row still stands: the runner's later polls would then apply the tenant's newer events past
the held one, or hold it again further on (moving the hold row past records it never applied). The request
stands, and a retry catches up from what the store has.
"""
from dataclasses import replace
from types import SimpleNamespace

import pytest

import projectors.admit
from infra.adapters.eventlog.memory import MemoryLog
from projectors.base import Batch, HoldMoved, Position
from projectors.runner import ProjectorRunner
from tests.unit.test_projector_halts import (ACME, BETA, P0, P1, TOPIC, FakeConsumer, FakeProjection, encode, record,
                                             records, replay, runner, tenant_chain_from)


async def test_a_resume_the_store_fails_leaves_the_tenant_held_and_its_newer_events_unapplied():
    # Given acme held at offset 1 (chain_seq 2: a record that holds no envelope), beta stored around it
    r = runner()
    await r.guarded({P0: records(0, 0, ACME[:1]) + [record(0, 1, b"{oops")] + records(0, 2, BETA[:1])})
    hold = r.projection.held["acme"]
    # When the resume (after the fix: the log read again holds acme's real event) finds the store down
    r.projection.down = OSError("connection refused")
    with pytest.raises(OSError):
        await r.admission.resume(hold, replay(records(0, 1, ACME[1:2])))
    # Then acme is still held in memory, as it was, and its hold row too
    assert (r.admission.held, r.projection.held) == ({"acme": hold}, {"acme": hold})
    # And the next poll (the store back) passes over acme's next event, though it follows acme's stored head
    r.projection.down = None
    await r.guarded({P0: records(0, 3, ACME[1:2]) + records(0, 4, BETA[1:2])})
    assert r.projection.stored == [(0, "acme", 1), (0, "beta", 1), (0, "beta", 2)]
    assert (r.admission.held, r.projection.held) == ({"acme": hold}, {"acme": hold})


async def test_a_resume_the_store_fails_does_not_let_a_later_poll_move_the_hold_past_unapplied_records():
    # acme held where the store refused chain_seq 2 (offset 1); chain_seq 3 (offset 2) passed over
    poisoned = [ACME[0]] + tenant_chain_from(ACME[0], [{"note": "poison"}, {"note": "event 3"}, {"note": "event 4"}])
    r = runner()
    await r.guarded({P0: records(0, 0, poisoned[:3])})
    hold = r.projection.held["acme"]
    assert (hold.offset, hold.chain_seq) == (1, 2)
    r.projection.down = OSError("connection refused")
    with pytest.raises(OSError):
        await r.admission.resume(hold, replay(records(0, 1, poisoned[1:3])))
    r.projection.down = None
    # chain_seq 4 does not follow the stored head (1): were acme not held, it would be held again here, at offset 3
    await r.guarded({P0: records(0, 3, poisoned[3:])})
    assert (r.admission.held, r.projection.held) == ({"acme": hold}, {"acme": hold})
    assert r.projection.stored == [(0, "acme", 1)]


class FailingOnce(FakeProjection):
    """A store that fails the nth apply (counting from when `fail_at` is set), once."""
    fail_at: int | None = None

    async def apply(self, batches, holds=(), released=None) -> None:
        if self.fail_at is not None:
            self.fail_at -= 1
            if self.fail_at == 0:
                self.fail_at = None
                raise OSError("connection reset")
        await super().apply(batches, holds, released)


async def test_a_resume_that_fails_after_storing_a_chunk_is_retried_from_the_stored_head(monkeypatch):
    monkeypatch.setattr(projectors.admit, "RESUME_CHUNK", 1)
    r = ProjectorRunner(SimpleNamespace(topic_prefix="t"), FailingOnce(), log_=MemoryLog([TOPIC], 2))
    r.consumer, r.retry_delay_s = FakeConsumer(), 0.0
    bad = {**ACME[1], "hash": "f" * 64}
    await r.guarded({P0: records(0, 0, ACME[:1]) + [record(0, 1, encode(bad))] + records(0, 2, ACME[2:3])})
    hold = r.projection.held["acme"]
    fixed = records(0, 1, ACME[1:3])
    r.projection.fail_at = 2  # the first chunk (chain_seq 2) is stored, the second fails
    with pytest.raises(OSError, match="connection reset"):
        await r.admission.resume(hold, replay(fixed))
    assert (r.admission.held, r.projection.held) == ({"acme": hold}, {"acme": hold})
    assert r.projection.stored == [(0, "acme", 1), (0, "acme", 2)]
    # The retry passes over chain_seq 2 (behind the stored head) and stores 3 once, then releases acme
    assert await r.admission.resume(hold, replay(fixed)) is None
    assert (r.admission.held, r.projection.held) == ({}, {})
    assert r.projection.stored == [(0, "acme", 1), (0, "acme", 2), (0, "acme", 3)]


class Resumable(FakeProjection):
    """The fake store with positions and a resume request, whose catch-up another process got to first."""

    async def positions(self):
        return {0: Position(0, 2, None)}

    async def apply(self, batches: list[Batch], holds=(), released=None) -> None:
        if any(b.catch_up is not None for b in batches):
            raise HoldMoved("tenant acme's hold was changed by another process: it is now released")
        await super().apply(batches, holds, released)


async def test_a_catch_up_another_process_got_to_first_rereads_holds_and_positions_and_is_no_error():
    r = ProjectorRunner(SimpleNamespace(topic_prefix="t", events_topic=TOPIC), Resumable(), log_=MemoryLog([TOPIC], 2))
    r.consumer, r.retry_delay_s = FakeConsumer(), 0.0
    await r.guarded({P0: records(0, 0, ACME[:1]) + [record(0, 1, b"{oops")]})
    hold = r.projection.held["acme"]
    r.projection.held["acme"] = replace(hold, resume_requested=True)  # ops asked to resume acme
    await r.resume_requested(every_s=0)
    assert (r.last_error, r.unpositioned, r.consumer.paused) == (None, {P0, P1}, {P0, P1})
    assert r.admission.held == {"acme": hold}
