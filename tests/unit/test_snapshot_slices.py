"""A fold snapshot is pickled and restored a slice at a time (commands/snapshots.py), so a big fold does not hold
the event loop (and the group's heartbeats) for the whole of it; what is restored is still the same fold."""
import asyncio
import io
import pickle

import pytest

from commands import snapshots
from commands.snapshots import capture, mac_key, restore
from domain.ledger import TenantLedger
from tests.support import unique
from tests.unit.test_snapshot_takeover import fold, rebuilt, snapshotted_log

KEY = mac_key(b"k" * 32)


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(snapshots, "SLICE", 2)


def pieces(body: bytes) -> list[tuple]:
    unpickler, out = pickle.Unpickler(io.BytesIO(body)), []
    while (piece := unpickler.load())[0] != "end":
        out.append(piece)
    return out


async def test_a_takeover_from_a_sliced_snapshot_folds_exactly_what_a_replay_from_offset_0_folds(small_slices):
    tenants = [unique("t"), unique("t")]
    settings, log, store = await snapshotted_log(tenants)
    [snapshot] = store.kept.values()
    kinds = [p[0] for p in pieces(snapshot.body)]
    from_snapshot, replayed = await rebuilt(settings, log, store)
    from_zero, _ = await rebuilt(settings, log, None)
    assert kinds.count("items") > 2 * len(tenants) and "object" in kinds  # it was really sliced
    assert replayed == 6 and fold(from_snapshot) == fold(from_zero)


def ledger_with_shared_objects() -> tuple[TenantLedger, list]:
    ledger = TenantLedger("acme")
    shared = [{"outcome": "accepted"}]
    ledger.replies.update({f"key-{i}": {"n": i, "shared": shared} for i in range(7)})
    ledger.step_runs["s"] = shared  # the same object in another field
    ledger.families.owner.update({f"agg-{i}": f"run-{i % 3}" for i in range(5)})  # a dict inside an object
    return ledger, shared


async def test_objects_shared_across_slices_and_fields_stay_one_object(small_slices):
    ledger, _ = ledger_with_shared_objects()
    snapshot = await capture({"acme": ledger}, 0, 10, "h", 4, "d", KEY)
    restored = (await restore(snapshot, TenantLedger))["acme"]
    assert restored.replies == ledger.replies and list(restored.replies) == list(ledger.replies)  # order kept
    assert restored.replies["key-0"]["shared"] is restored.replies["key-6"]["shared"] is restored.step_runs["s"]
    assert restored.families.owner == ledger.families.owner and type(restored.families) is type(ledger.families)
    assert restored.replies["key-0"]["shared"] is not ledger.step_runs["s"]  # a copy, not the owner's object


async def test_the_loop_runs_between_slices_while_a_fold_is_captured_and_restored(small_slices):
    ledger, _ = ledger_with_shared_objects()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)
    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    snapshot = await capture({"acme": ledger}, 0, 10, "h", 4, "d", KEY)
    during_capture = ticks - before
    before = ticks
    await restore(snapshot, TenantLedger)
    during_restore = ticks - before
    ticking.cancel()
    slices = len(pieces(snapshot.body))
    assert during_capture >= slices - 1 and during_restore >= slices - 1  # one turn of the loop per slice
    assert slices > 8  # 7 replies in 4 slices, families' attributes, the other fields
