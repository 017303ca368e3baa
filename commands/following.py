"""A follower fold: each processor keeps folding the command partitions it does not own (docs/adr/0015).

A successor's rebuild used to read, at the moment of the takeover, everything the partition's fold
holds: the log from offset 0, or a snapshot and the log after it. Both grow with the partition (a
1M-event fold took ~4 s from its snapshot), so a takeover was not flat. A follower does that reading
beforehand: for every partition of the command topic not assigned to this member it restores the
snapshot (or starts at offset 0), then keeps folding the partition's events and replies, read_committed,
as they are committed. When the partition is assigned here, the owner fences the previous one first
and only then takes the follower's fold and replays what is newer than it: a few transactions at most.

The fold is the same as a rebuild's: the same ledgers (`terms` are the owner's), the same `apply` and
`remember` over the same committed records in offset order (events and replies are separate state, so
reading them in rounds folds the same as reading all events, then all replies). The follower trusts
nothing it did not fold itself: a broken chain, a log error or a snapshot that does not check out
costs only its fold (the owner then rebuilds as if there were no follower, and finds what is wrong).
A fold that has not yet caught up with the log once is not handed over: the rebuild's own way
(a snapshot, then the log) is faster than finishing it.

It costs memory and CPU: every processor holds the whole topic's fold (its own partitions and the
others'), and folds every event once more for each other processor. `RUNLEDGER_FOLLOW` turns it off.
"""
import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from commands import heap
from commands.snapshots_log import Snapshotter
from domain.ledger import TenantLedger
from infra.adapters.eventlog import EventLog, LogError, PartitionReader, Record, TopicPartition
from schemas.envelope import decode

log = logging.getLogger("runledger.processor")

YIELD_EVERY = 500  # records folded between two turns of the loop: the owned partitions' work goes on meanwhile
RETRY_S = 30.0  # a fold that went wrong is started again (from its snapshot, else offset 0) no sooner than this


@dataclass
class Followed:
    """One followed partition's fold and where in the log it has got to."""

    partition: int
    terms: dict[str, Any]
    tenants: dict[str, TenantLedger] = field(default_factory=dict)
    events_from: int = 0    # the next event offset to fold
    replies_from: int = 0   # the next reply offset to fold
    snapshot_events: int = 0  # events in the snapshot it started from (0: from offset 0)
    folded: int = 0         # events folded from the log since then
    caught_up: bool = False  # it has reached the log's end once
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wanted: bool = False    # its owner-to-be is taking it: stop at the next record

    def tenant(self, tenant_id: str) -> TenantLedger:
        ledger = self.tenants.get(tenant_id)
        if ledger is None:
            ledger = self.tenants[tenant_id] = TenantLedger(tenant_id, **self.terms)
        return ledger


def fold_event(tenant: Callable[[str], TenantLedger], record: Record) -> None:
    """Fold one committed event into its tenant's ledger: the one way, for a rebuild and a follower alike."""
    env = decode(record.value)
    tenant(env["tenant_id"]).apply(env)


def fold_reply(tenant: Callable[[str], TenantLedger], record: Record) -> None:
    """Fold one committed reply into its tenant's ledger: the one way, for a rebuild and a follower alike."""
    reply = json.loads(record.value)
    tenant(reply["tenant_id"]).remember(reply)


class Follower:
    """Folds, in the background, every command partition `others()` names; hands one over with `take`."""

    def __init__(self, log_: EventLog, snapshotter: Snapshotter, terms: Callable[[], dict[str, Any]],
                 others: Callable[[], set[int] | None], interval_s: float = 0.25):
        self.log, self.snapshotter, self.terms, self.others = log_, snapshotter, terms, others
        self.interval_s = interval_s
        self.followed: dict[int, Followed] = {}
        self.not_before: dict[int, float] = {}  # partitions whose fold went wrong, and when to try them again
        self.stats = {"handed_over": 0, "discarded": 0, "rounds": 0}

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until stopped; a failing round (the broker down) is tried again, never a reason to exit."""
        reader: PartitionReader | None = None
        try:
            while not stop.is_set():
                try:
                    if reader is None:
                        reader = self.log.reader()
                        await reader.start()
                    await self.round(reader)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - a follower only saves time; the log is the record
                    log.warning("follower: a round failed: %r; trying again", error)
                    if reader is not None:
                        with contextlib.suppress(Exception):
                            await reader.stop()
                        reader = None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            if reader is not None:
                with contextlib.suppress(Exception):
                    await reader.stop()

    async def round(self, reader: PartitionReader) -> None:
        """Bring every partition of the others up to the log's end now, starting to follow those it did not yet.

        A followed partition that became this member's is left as it is: its new owner takes it."""
        others = self.others()
        if others is None:  # not in the group yet, or mid-rebalance: which partitions are ours is not known
            return
        self.stats["rounds"] += 1
        for partition in sorted(others):
            followed = self.followed.get(partition)
            if followed is None and time.monotonic() < self.not_before.get(partition, 0.0):
                continue
            if followed is None:
                followed = self.followed[partition] = Followed(partition, self.terms())
            if followed.wanted:
                continue
            async with followed.lock:
                if self.followed.get(partition) is followed and not followed.wanted:
                    await self.catch_up(reader, followed)

    async def catch_up(self, reader: PartitionReader, followed: Followed) -> None:
        events, replies = self.snapshotter.tps(followed.partition)
        started, first = time.perf_counter(), not followed.caught_up
        try:
            with heap.bulk() if first else contextlib.nullcontext():
                if first and followed.events_from == 0 and followed.replies_from == 0 and not followed.tenants:
                    await self.start_from_snapshot(reader, followed)
                ends = await reader.end_offsets([events, replies])
                if not await self.fold(reader, followed, events, followed.events_from, ends[events], self.event):
                    return
                if not await self.fold(reader, followed, replies, followed.replies_from, ends[replies], self.reply):
                    return
        except LogError:
            raise  # the broker: the fold is good as far as it got, and the next round goes on from there
        except Exception as error:  # noqa: BLE001 - a broken chain, an unreadable record: its fold is no good
            self.discard(followed, f"{error!r}")
            return
        if first:
            followed.caught_up = True
            log.info("following partition %s: caught up at event offset %s (%s tenants, %s events from the log, "
                     "%.2f s)", followed.partition, followed.events_from, len(followed.tenants), followed.folded,
                     time.perf_counter() - started,
                     extra={"following": followed.partition, "snapshot_events": followed.snapshot_events,
                            "folded": followed.folded, "caught_up_s": round(time.perf_counter() - started, 4)})

    async def start_from_snapshot(self, reader: PartitionReader, followed: Followed) -> None:
        _, events_from, replies_from, snapshot_events = await self.snapshotter.resume(
            reader, followed.partition, followed.tenant)
        if not events_from and not replies_from:
            followed.tenants.clear()  # what a snapshot that did not check out left behind (or an empty one)
        followed.events_from, followed.replies_from, followed.snapshot_events = events_from, replies_from, snapshot_events

    @staticmethod
    async def fold(reader: PartitionReader, followed: Followed, tp: TopicPartition, start: int, end: int,
                   one) -> bool:
        """Fold tp's records from start up to end; False if the owner-to-be wanted the fold meanwhile."""
        if start >= end:
            return True
        count = 0
        async with contextlib.aclosing(reader.read(tp, start, end)) as records:
            async for record in records:
                one(followed, record)
                count += 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                    if followed.wanted:
                        return False
        return not followed.wanted

    @staticmethod
    def event(followed: Followed, record: Record) -> None:
        fold_event(followed.tenant, record)
        followed.events_from, followed.folded = record.offset + 1, followed.folded + 1

    @staticmethod
    def reply(followed: Followed, record: Record) -> None:
        fold_reply(followed.tenant, record)
        followed.replies_from = record.offset + 1

    async def take(self, partition: int) -> Followed | None:
        """The partition's fold, for its new owner (who has fenced the previous one); None if there is none worth it.

        It stops following the partition: the fold is the owner's from now on."""
        followed = self.followed.get(partition)
        if followed is None:
            return None
        followed.wanted = True
        if not followed.caught_up:  # not worth waiting for (a snapshot's restore is not stopped midway)
            del self.followed[partition]
            self.stats["discarded"] += 1
            log.info("partition %s: its follower fold had not caught up yet; rebuilding the usual way", partition)
            return None
        async with followed.lock:  # a round folding it stops at its next record
            if self.followed.get(partition) is not followed:
                return None
            del self.followed[partition]
        self.stats["handed_over"] += 1
        return followed

    def discard(self, followed: Followed, why: str) -> None:
        """Drop a fold that went wrong; a later round starts the partition afresh (its snapshot, else offset 0)."""
        self.stats["discarded"] += 1
        self.not_before[followed.partition] = time.monotonic() + RETRY_S
        log.warning("following partition %s: fold dropped (%s); starting it again in %.0f s", followed.partition,
                    why, RETRY_S)
        if self.followed.get(followed.partition) is followed:
            del self.followed[followed.partition]
