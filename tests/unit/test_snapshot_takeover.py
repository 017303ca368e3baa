"""Derived fold snapshots on the in-memory event log: a takeover from one folds exactly what a replay from
offset 0 folds; a tampered, foreign or stale snapshot, or one whose save never finished, is not trusted."""
import asyncio
import dataclasses
import logging

from commands.ownership import Ownership, PartitionOwner
from commands.processor import CommandProcessor
from commands.snapshots import FOLDED, MemorySnapshots, Snapshot, mac_key
from infra.adapters.eventlog.memory import MemoryLog
from tests.support import make_settings, unique, wait_until
from tests.unit.test_processor_on_twin import Clock, answered, lifecycle, send, topic, twin
from tests.unit.test_processor_on_twin import running as twin_running


def running(settings, log: MemoryLog, store, owning: int = 1):
    return twin_running(settings, log, Clock(), owning, snapshots=store)


async def rebuilt(settings, log, store) -> tuple[PartitionOwner, int]:
    owner = PartitionOwner(0, None)  # a rebuild never writes
    replayed = await Ownership(settings, log, {"rebuilds": 0}, snapshots=store).rebuild(owner)
    return owner, replayed


def plain(value):
    """The value as plain data (objects as their type and fields), so that equal states compare equal."""
    if isinstance(value, dict):
        return {plain(k) if not isinstance(k, str) else k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(repr(plain(v)) for v in value)
    if type(value).__module__.split(".")[0] in ("domain", "schemas"):  # ours: compare their fields
        slots = getattr(type(value), "__slots__", ())
        state = dict(getattr(value, "__dict__", {})) | {s: getattr(value, s) for s in slots if hasattr(value, s)}
        return (type(value).__name__, plain(state))
    return value  # str, int, UUID, datetime, bytes...: compared by value


def fold(owner: PartitionOwner) -> dict:
    """Each tenant's folded state as plain data, field by field."""
    return {t: {name: plain(getattr(ledger, name)) for name in FOLDED} for t, ledger in owner.tenants.items()}


async def snapshotted_log(tenants: list[str], before: int = 3, after: int = 1):
    """A one-partition log whose snapshot (taken every 5 events) is followed by more events."""
    settings = make_settings(partitions=1, snapshot_every=5)
    log, store = twin(settings), MemorySnapshots()
    async with running(settings, log, store):
        first = [c for t in tenants for _ in range(before) for c in lifecycle(t)]
        send(log, settings, first)
        await answered(log, settings, first)
        await wait_until(lambda: store.kept, 10, "a snapshot")
        await wait_until(lambda: store.kept[(settings.topic_prefix, 0)].events == len(first), 10, "an up-to-date one")
    tail = [c for t in tenants for _ in range(after) for c in lifecycle(t)]
    async with running(settings, log, MemorySnapshots()):  # appends past the snapshot, keeps none of its own
        send(log, settings, tail)
        await answered(log, settings, tail)
    return settings, log, store


async def test_a_takeover_from_a_snapshot_folds_exactly_what_a_replay_from_offset_0_folds():
    # Given a partition with 18 events under a snapshot and 6 more after it
    tenants = [unique("t"), unique("t")]
    settings, log, store = await snapshotted_log(tenants)
    # When it is rebuilt from the snapshot, and from offset 0
    from_snapshot, replayed = await rebuilt(settings, log, store)
    from_zero, replayed_from_zero = await rebuilt(settings, log, None)
    # Then only the 6 are replayed, and the two folds are the same, field by field
    assert (replayed, replayed_from_zero, from_snapshot.snapshot_events) == (6, 24, 18)
    assert fold(from_snapshot) == fold(from_zero)
    assert sorted(from_snapshot.tenants) == sorted(tenants)


async def test_the_next_command_after_a_takeover_from_a_snapshot_continues_each_chain(caplog):
    tenants = [unique("t"), unique("t")]
    settings, log, store = await snapshotted_log(tenants)
    heads = {e["tenant_id"]: (e["chain_seq"], e["hash"]) for e in topic(log, settings.events_topic)}
    caplog.set_level(logging.INFO, "runledger.processor")
    async with running(settings, log, store):
        owning = [(r.from_snapshot, r.replayed) for r in caplog.records if hasattr(r, "owning")]
        assert owning == [(18, 6)]  # it took over from the snapshot, replaying only what followed it
        sent = [lifecycle(t)[0] for t in tenants]
        send(log, settings, sent)
        replies = await answered(log, settings, sent)
    new = {e["tenant_id"]: e for e in topic(log, settings.events_topic)[-2:]}
    for c in sent:
        assert replies[c["command_id"]][0]["events"][0]["chain_seq"] == heads[c["tenant_id"]][0] + 1
        assert (new[c["tenant_id"]]["chain_seq"], new[c["tenant_id"]]["prev_hash"]) == (
            heads[c["tenant_id"]][0] + 1, heads[c["tenant_id"]][1])


async def ignored(settings, log, store, snapshot: Snapshot) -> tuple[int, int, bool]:
    store.kept[(settings.topic_prefix, 0)] = snapshot
    owner, replayed = await rebuilt(settings, log, store)
    from_zero, _ = await rebuilt(settings, log, None)
    return replayed, owner.snapshot_events, fold(owner) == fold(from_zero)


async def test_a_tampered_snapshot_is_ignored_and_the_partition_replayed_from_offset_0():
    settings, log, store = await snapshotted_log([unique("t")])
    kept = store.kept[(settings.topic_prefix, 0)]
    body = bytearray(kept.body)
    body[-3] ^= 0x01  # one bit of the fold changed, the MAC left as it was
    assert await ignored(settings, log, store, dataclasses.replace(kept, body=bytes(body))) == (12, 0, True)
    forged = dataclasses.replace(kept, events=kept.events + 1).sealed(mac_key(b"\x07" * 32))  # not our key
    assert await ignored(settings, log, store, forged) == (12, 0, True)


async def test_a_snapshot_of_another_log_or_past_the_end_of_this_one_is_ignored():
    settings, log, store = await snapshotted_log([unique("t")])
    kept, key = store.kept[(settings.topic_prefix, 0)], mac_key(settings.signing_seed)
    other = dataclasses.replace(kept, event_hash="ab" * 32).sealed(key)  # well sealed, but not this log's event
    assert await ignored(settings, log, store, other) == (12, 0, True)
    beyond = dataclasses.replace(kept, events_offset=kept.events_offset + 1000).sealed(key)
    assert await ignored(settings, log, store, beyond) == (12, 0, True)
    code = dataclasses.replace(kept, code="0" * 64).sealed(key)  # made by other code: another fold
    assert await ignored(settings, log, store, code) == (12, 0, True)


class DiesMidSave(MemorySnapshots):
    """A store whose saves never finish: the owner is killed while writing its snapshot."""

    def __init__(self, kept: dict):
        super().__init__()
        self.kept, self.started = kept, asyncio.Event()

    async def save(self, scope: str, snapshot: Snapshot) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_an_owner_killed_mid_snapshot_leaves_the_previous_one_usable():
    # Given a partition with a snapshot, then an owner that dies while saving a newer one
    tenants = [unique("t")]
    settings, log, store = await snapshotted_log(tenants)
    previous = store.kept[(settings.topic_prefix, 0)]
    dying = DiesMidSave(store.kept)
    processor = CommandProcessor(settings, Clock(), log_=log, snapshots=dying)
    task = asyncio.create_task(processor.run(asyncio.Event()))
    more = [c for _ in range(2) for c in lifecycle(tenants[0])]
    send(log, settings, more)
    await answered(log, settings, more)
    await asyncio.wait_for(dying.started.wait(), 10)
    task.cancel()  # what a SIGKILL leaves: the save never happened
    await asyncio.gather(task, return_exceptions=True)
    for snapshotting in [o.snapshotting for o in processor.owners.values()] + [processor.ownership.snapshotter]:
        if isinstance(snapshotting, asyncio.Task):
            snapshotting.cancel()
    # Then the successor takes over from the previous snapshot and folds what a full replay folds
    assert store.kept[(settings.topic_prefix, 0)] == previous
    owner, replayed = await rebuilt(settings, log, store)
    from_zero, _ = await rebuilt(settings, log, None)
    assert (owner.snapshot_events, replayed, fold(owner) == fold(from_zero)) == (9, 9, True)
