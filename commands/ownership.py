"""Which command partitions this processor owns, and how it takes and gives them up.

To own a partition is to hold the writer that fenced every earlier owner, and the tenant state
rebuilt from the log after that fence. A partition may move to another member at any await (a
rebalance), so `acquire` notes the consumer's generation when it starts and gives up, without a
trace, if the assignment changed by the time it would register ownership; seek, registration and
resume then happen with no await between them. Partitions assigned together are acquired together,
so one that was just lost by a killed member does not wait behind the survivor's own (an eager
rebalance revokes and reassigns them all). The rebuild starts from this member's follower fold of
the partition when it has one that caught up (commands/following.py: only the last transactions are
left to read), else from the partition's derived fold snapshot when one checks out against the log
(commands/snapshots_log.py), else from offset 0.
`heal` restores the one invariant a lost race could still break: an owned partition is never left
paused unless its backlog is full.
"""
import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from commands import heap
from commands.content import ContentKeys
from commands.following import Follower, fold_event, fold_reply
from commands.snapshots import SnapshotStore
from commands.snapshots_log import Snapshotter, safely
from domain.client_time import ClockBounds
from domain.evidence import CheckpointSigner
from domain.ledger import ChainBroken, TenantLedger
from domain.retention import Rules
from infra.adapters.eventlog import EventLog, GroupConsumer, LogError, NotAssigned, TopicPartition, TransactionalWriter
from infra.adapters.meters import ProcessorMeters, processor_meters
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.processor")


class MovedAway(Exception):
    """The partition left this member's assignment while it was being acquired."""


@dataclass
class PartitionOwner:
    """What the processor holds for one owned partition: its fenced writer and its tenants."""

    partition: int
    writer: TransactionalWriter
    tenants: dict[str, TenantLedger] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list = field(default_factory=list)
    backlogged: bool = False  # paused on purpose: the pending backlog is full
    worker: asyncio.Task | None = None
    timer: asyncio.Task | None = None
    rules: Rules = field(default_factory=Rules)
    signer: CheckpointSigner | None = None
    clock: ClockBounds = field(default_factory=ClockBounds)
    snapshot_events: int = 0  # events the latest snapshot of this partition holds (taken or restored)
    followed: int | None = None  # events its follower folded before the takeover (commands/following.py); None: rebuilt
    snapshotting: asyncio.Task | None = None

    def tenant(self, tenant_id: str) -> TenantLedger:
        ledger = self.tenants.get(tenant_id)
        if ledger is None:
            ledger = self.tenants[tenant_id] = TenantLedger(tenant_id, rules=self.rules, signer=self.signer,
                                                            clock=self.clock)
        return ledger


class Ownership:
    def __init__(self, settings: Settings, log_: EventLog, stats: dict, content: ContentKeys | None = None,
                 meters: ProcessorMeters | None = None, snapshots: SnapshotStore | None = None):
        self.settings, self.log, self.stats = settings, log_, stats
        self.snapshotter = Snapshotter(snapshots, settings.topic_prefix, settings.events_topic, settings.replies_topic,
                                       settings.signing_seed, settings.snapshot_every)
        self.meters = meters or processor_meters(settings.commands_topic, settings.processor_group)
        self.content = content or ContentKeys(None)
        seed = settings.signing_seed
        self.signer = CheckpointSigner(settings.deployment, seed) if seed is not None else None

        self.owners: dict[int, PartitionOwner] = {}
        self.broken: dict[int, str] = {}
        self.not_before: dict[int, float] = {}
        self.fenced_backoff_s = 5.0
        self.consumer: GroupConsumer = None  # type: ignore[assignment]  # set by the processor before start
        self.joined = False  # the group has assigned this member its partitions (none is an answer too)
        self.follower = Follower(log_, self.snapshotter, self.terms, self.others) if settings.follow else None

    def terms(self) -> dict:
        """How every tenant ledger of this processor is made (an owned partition's and a followed one's alike)."""
        return {"rules": dataclasses.replace(self.settings.retention_rules, content_keys=self.content.store is not None),
                "signer": self.signer,
                "clock": ClockBounds(self.settings.clock_skew_s, self.settings.client_time_horizon_s)}

    def others(self) -> set[int] | None:
        """The command partitions assigned to other members (what the follower folds); None before joining."""
        if not self.joined or self.consumer is None:
            return None
        mine = {tp.partition for tp in self.consumer.assignment()} | set(self.owners)
        return set(range(self.settings.partitions)) - mine - set(self.broken)

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.settings.commands_topic, partition)

    # -- the group's callbacks ---------------------------------------------------------------
    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold every new partition until it is acquired (fenced, rebuilt, positioned)."""
        self.joined = True
        if assigned:
            self.consumer.pause(*assigned)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned),
                 extra={"assigned": sorted(tp.partition for tp in assigned), "monotonic": time.monotonic()})

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined = False  # until the new assignment: which partitions are others' is not known meanwhile
        for tp in revoked:
            await self.release(tp.partition)

    # -- taking partitions -------------------------------------------------------------------
    async def acquire_assigned(self) -> None:
        wanted = [tp for tp in sorted(self.consumer.assignment()) if tp.partition not in self.owners
                  and tp.partition not in self.broken and time.monotonic() >= self.not_before.get(tp.partition, 0.0)]
        for tp, outcome in zip(wanted, await asyncio.gather(*map(self.acquire, wanted), return_exceptions=True)):
            if isinstance(outcome, Exception):  # every acquisition ends before the next turn starts another
                self.not_before[tp.partition] = time.monotonic() + 1.0
                log.error("partition %s: acquiring it failed: %r; trying again shortly", tp.partition, outcome)

    async def acquire(self, tp: TopicPartition) -> None:
        """Fence the previous owner, rebuild the partition's state, then resume its commands."""
        generation = self.consumer.generation
        owner = PartitionOwner(tp.partition, self.log.transactional_writer(self.settings.transactional_id(tp.partition)),
                               **self.terms())
        began = time.perf_counter()
        try:
            await owner.writer.start()
            fenced = time.perf_counter()
            self.still_assigned(tp, generation)
            replayed = await self.rebuild(owner)
            rebuilt = time.perf_counter()
            await self.content.destroy_shredded(owner.tenants.values())
            self.still_assigned(tp, generation)
            committed = await self.consumer.committed(tp)
            self.still_assigned(tp, generation)
            self.consumer.seek(tp, committed or 0)
        except (MovedAway, NotAssigned):
            await self.close(owner)
            log.info("partition %s moved while being acquired; leaving it to its new owner", tp.partition)
            return
        except ChainBroken as error:
            await self.close(owner)
            self.broken[tp.partition] = str(error)
            log.critical("partition %s stopped, chain broken: %s", tp.partition, error)
            return
        except LogError as error:
            await self.close(owner)
            self.not_before[tp.partition] = time.monotonic() + 1.0
            log.warning("could not take partition %s yet: %r", tp.partition, error)
            return
        except Exception as error:  # the key store (destroying shredded keys) is down: try again shortly
            await self.close(owner)
            self.not_before[tp.partition] = time.monotonic() + 1.0
            log.warning("could not take partition %s yet (key store): %r", tp.partition, error)
            return
        self.owners[tp.partition] = owner
        self.consumer.resume(tp)
        if self.snapshotter.due(replayed + owner.snapshot_events, owner.snapshot_events):
            self.start_snapshot(owner)
        log.info("owning partition %s (%s tenants, from offset %s)", tp.partition, len(owner.tenants), committed or 0,
                 extra={"owning": tp.partition, "monotonic": time.monotonic(), "fencing_s": round(fenced - began, 4),
                        "rebuild_s": round(rebuilt - fenced, 4), "acquire_s": round(time.perf_counter() - began, 4),
                        "replayed": replayed, "from_snapshot": owner.snapshot_events,
                        "from_follower": owner.followed is not None, "tail": replayed - (owner.followed or 0)})

    def still_assigned(self, tp: TopicPartition, generation: int) -> None:
        if self.consumer.generation != generation or tp not in self.consumer.assignment():
            raise MovedAway(tp)

    async def rebuild(self, owner: PartitionOwner) -> int:
        """Rebuild the partition's tenant state: the follower's fold, if it has one that caught up; else its snapshot,
        if one checks out; then the log after it.

        Return how many events were replayed from the log (by the follower beforehand too)."""
        self.stats["rebuilds"] += 1
        started = time.perf_counter()
        owner.tenants.clear()
        followed = await self.follower.take(owner.partition) if self.follower else None
        reader = self.log.reader()
        await reader.start()
        replayed = 0
        try:
            with heap.bulk():  # the fold is built in bulk: no collection meanwhile, then frozen out of it
                if followed is not None:  # folded beforehand (commands/following.py): only what is newer is left
                    owner.tenants, owner.snapshot_events = followed.tenants, followed.snapshot_events
                    events_from, replies_from, replayed = followed.events_from, followed.replies_from, followed.folded
                    owner.followed = followed.folded
                else:
                    _, events_from, replies_from, owner.snapshot_events = await self.snapshotter.resume(
                        reader, owner.partition, owner.tenant)
                    if not events_from and not replies_from:
                        owner.tenants.clear()  # what a snapshot that did not check out left (or an empty one)
                events, replies = self.snapshotter.tps(owner.partition)
                async for record in reader.read(events, events_from):
                    fold_event(owner.tenant, record)
                    replayed += 1
                async for record in reader.read(replies, replies_from):
                    fold_reply(owner.tenant, record)
        finally:
            await reader.stop()
        self.meters.rebuilt(started)
        return replayed

    # -- derived snapshots -------------------------------------------------------------------
    def snapshot_due(self, owner: PartitionOwner) -> bool:
        if owner.snapshotting is not None and not owner.snapshotting.done():
            return False
        return self.snapshotter.due(sum(t.chain.head_seq for t in owner.tenants.values()), owner.snapshot_events)

    def start_snapshot(self, owner: PartitionOwner) -> None:
        owner.snapshotting = asyncio.get_running_loop().create_task(safely(
            f"partition {owner.partition}", self.snapshot(owner)), name=f"snapshot-{owner.partition}")

    async def snapshot(self, owner: PartitionOwner) -> None:
        """Snapshot the partition's fold between two of its transactions, then save it (outside the lock)."""
        reader = self.log.reader()
        await reader.start()
        try:
            async with owner.lock:
                if self.owners.get(owner.partition) is not owner:
                    return
                snapshot = await self.snapshotter.take(reader, owner.partition, owner.tenants)
        finally:
            await reader.stop()
        if snapshot is not None:
            await self.snapshotter.save(snapshot)
            owner.snapshot_events = snapshot.events

    # -- giving them up ----------------------------------------------------------------------
    async def release(self, partition: int) -> None:
        owner = self.owners.pop(partition, None)
        if owner is None:
            return
        async with owner.lock:
            await self.close(owner)
        await asyncio.gather(*(t for t in (owner.worker, owner.timer) if t and t is not asyncio.current_task()),
                             return_exceptions=True)
        log.info("released partition %s", partition)

    async def drop(self, owner: PartitionOwner, why: str, backoff_s: float) -> None:
        """Forget a partition's state; acquire_assigned takes it again (fence, replay) if it is still ours."""
        log.warning("dropping partition %s: %s", owner.partition, why)
        if self.owners.get(owner.partition) is owner:
            del self.owners[owner.partition]
        try:
            self.consumer.pause(self.tp(owner.partition))
        except NotAssigned:
            pass  # it has moved on already
        self.not_before[owner.partition] = time.monotonic() + backoff_s
        await self.close(owner)

    async def close(self, owner: PartitionOwner) -> None:
        """Close a partition's writer; one that fails to close (fenced, broker gone) is closed enough."""
        try:
            await owner.writer.stop()
        except Exception as error:  # noqa: BLE001 - nothing is left to protect: it never writes again
            log.warning("partition %s: closing its writer failed: %r", owner.partition, error)

    async def release_all(self) -> None:
        for partition in list(self.owners):
            await self.release(partition)

    # -- the invariant -----------------------------------------------------------------------
    def heal(self) -> None:
        """Resume an owned partition left paused by a lost race, and give up one no longer assigned."""
        assigned, paused = self.consumer.assignment(), self.consumer.paused()
        for partition, owner in list(self.owners.items()):
            tp = self.tp(partition)
            if tp not in assigned:
                self.stats["healed"] += 1
                log.error("partition %s is owned but not assigned; releasing it", partition)
                asyncio.get_running_loop().create_task(self.release(partition))
            elif tp in paused and not owner.backlogged:
                self.stats["healed"] += 1
                log.error("partition %s was owned but paused with no backlog; resuming it", partition)
                self.consumer.resume(tp)
