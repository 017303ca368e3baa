"""Which command partitions this processor owns, and how it takes and gives them up.

To own a partition is to hold the writer that fenced every earlier owner, and the tenant state
rebuilt from the log after that fence. A partition may move to another member at any await (a
rebalance), so `acquire` notes the consumer's generation when it starts and gives up, without a
trace, if the assignment changed by the time it would register ownership; seek, registration and
resume then happen with no await between them. `heal` restores the one invariant a lost race could
still break: an owned partition is never left paused unless its backlog is full.
"""
import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field

from commands.content import ContentKeys
from domain.client_time import ClockBounds
from domain.evidence import CheckpointSigner
from domain.ledger import ChainBroken, TenantLedger
from domain.retention import Rules
from infra.adapters.eventlog import EventLog, GroupConsumer, LogError, NotAssigned, TopicPartition, TransactionalWriter
from infra.adapters.meters import ProcessorMeters, processor_meters
from infra.adapters.settings import Settings
from schemas.envelope import decode

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

    def tenant(self, tenant_id: str) -> TenantLedger:
        ledger = self.tenants.get(tenant_id)
        if ledger is None:
            ledger = self.tenants[tenant_id] = TenantLedger(tenant_id, rules=self.rules, signer=self.signer,
                                                            clock=self.clock)
        return ledger


class Ownership:
    def __init__(self, settings: Settings, log_: EventLog, stats: dict, content: ContentKeys | None = None,
                 meters: ProcessorMeters | None = None):
        self.settings, self.log, self.stats = settings, log_, stats
        self.meters = meters or processor_meters(settings.commands_topic, settings.processor_group)
        self.content = content or ContentKeys(None)
        seed = settings.signing_seed
        self.signer = CheckpointSigner(settings.deployment, seed) if seed is not None else None

        self.owners: dict[int, PartitionOwner] = {}
        self.broken: dict[int, str] = {}
        self.not_before: dict[int, float] = {}
        self.fenced_backoff_s = 5.0
        self.consumer: GroupConsumer = None  # type: ignore[assignment]  # set by the processor before start

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.settings.commands_topic, partition)

    # -- the group's callbacks ---------------------------------------------------------------
    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold every new partition until it is acquired (fenced, rebuilt, positioned)."""
        if assigned:
            self.consumer.pause(*assigned)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            await self.release(tp.partition)

    # -- taking partitions -------------------------------------------------------------------
    async def acquire_assigned(self) -> None:
        for tp in sorted(self.consumer.assignment()):
            if (tp.partition not in self.owners and tp.partition not in self.broken
                    and time.monotonic() >= self.not_before.get(tp.partition, 0.0)):
                await self.acquire(tp)

    async def acquire(self, tp: TopicPartition) -> None:
        """Fence the previous owner, rebuild the partition's state, then resume its commands."""
        generation = self.consumer.generation
        owner = PartitionOwner(tp.partition, self.log.transactional_writer(self.settings.transactional_id(tp.partition)),
                               rules=dataclasses.replace(self.settings.retention_rules,
                                                         content_keys=self.content.store is not None),
                               signer=self.signer,
                               clock=ClockBounds(self.settings.clock_skew_s, self.settings.client_time_horizon_s))
        try:
            await owner.writer.start()
            self.still_assigned(tp, generation)
            await self.rebuild(owner)
            await self.content.destroy_shredded(owner.tenants.values())
            self.still_assigned(tp, generation)
            committed = await self.consumer.committed(tp)
            self.still_assigned(tp, generation)
            self.consumer.seek(tp, committed or 0)
        except (MovedAway, NotAssigned):
            await owner.writer.stop()
            log.info("partition %s moved while being acquired; leaving it to its new owner", tp.partition)
            return
        except ChainBroken as error:
            await owner.writer.stop()
            self.broken[tp.partition] = str(error)
            log.critical("partition %s stopped, chain broken: %s", tp.partition, error)
            return
        except LogError as error:
            await owner.writer.stop()
            self.not_before[tp.partition] = time.monotonic() + 1.0
            log.warning("could not take partition %s yet: %r", tp.partition, error)
            return
        except Exception as error:  # the key store (destroying shredded keys) is down: try again shortly
            await owner.writer.stop()
            self.not_before[tp.partition] = time.monotonic() + 1.0
            log.warning("could not take partition %s yet (key store): %r", tp.partition, error)
            return
        self.owners[tp.partition] = owner
        self.consumer.resume(tp)
        log.info("owning partition %s (%s tenants, from offset %s)", tp.partition, len(owner.tenants), committed or 0)

    def still_assigned(self, tp: TopicPartition, generation: int) -> None:
        if self.consumer.generation != generation or tp not in self.consumer.assignment():
            raise MovedAway(tp)

    async def rebuild(self, owner: PartitionOwner) -> None:
        """Replay the partition's events and replies into fresh tenant state."""
        self.stats["rebuilds"] += 1
        started = time.perf_counter()
        owner.tenants.clear()
        reader = self.log.reader()
        await reader.start()
        try:
            async for record in reader.read(TopicPartition(self.settings.events_topic, owner.partition)):
                env = decode(record.value)
                owner.tenant(env["tenant_id"]).apply(env)
            async for record in reader.read(TopicPartition(self.settings.replies_topic, owner.partition)):
                reply = json.loads(record.value)
                owner.tenant(reply["tenant_id"]).remember(reply)
        finally:
            await reader.stop()
        self.meters.rebuilt(started)

    # -- giving them up ----------------------------------------------------------------------
    async def release(self, partition: int) -> None:
        owner = self.owners.pop(partition, None)
        if owner is None:
            return
        async with owner.lock:
            await owner.writer.stop()
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
        await owner.writer.stop()

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
