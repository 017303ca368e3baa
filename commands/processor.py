"""The command processor: the single writer of each tenant chain.

It is a member of a consumer group over `ledger.commands`. For every partition it owns it runs
one transactional producer whose `transactional.id` names the partition, so when ownership
moves the new owner's `init_transactions` fences the old one at the broker and aborts its open
transaction. Only after fencing does the new owner replay `ledger.events` and `ledger.replies`
(read_committed) to rebuild chain heads, aggregates, idempotency records and timers, and only
then does it read the committed command offset and start deciding. Each batch of commands, the
events they produce, their replies and the command offset commit in one Kafka transaction.

Every send is awaited before `send_offsets_to_transaction` (aiokafka#1098: offsets added while
sends are still in flight can race the commit).
"""
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from domain.ledger import ChainBroken, Inconsistent, TenantLedger, Undecidable, expire_command
from infra import kafka
from infra.settings import Settings
from schemas.envelope import cloudevents_headers, decode, encode

log = logging.getLogger("runledger.processor")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class PartitionOwner:
    """What the processor holds for one owned partition: its fenced producer and its tenants."""

    partition: int
    producer: AIOKafkaProducer
    tenants: dict[str, TenantLedger] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list = field(default_factory=list)
    worker: asyncio.Task | None = None
    timer: asyncio.Task | None = None

    def tenant(self, tenant_id: str) -> TenantLedger:
        ledger = self.tenants.get(tenant_id)
        if ledger is None:
            ledger = self.tenants[tenant_id] = TenantLedger(tenant_id)
        return ledger


class Listener(ConsumerRebalanceListener):
    def __init__(self, processor: "CommandProcessor"):
        self.processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            await self.processor.release(tp.partition)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.processor.consumer.pause(*assigned)


class CommandProcessor:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow):
        self.settings = settings
        self.clock = clock
        self.owners: dict[int, PartitionOwner] = {}
        self.broken: dict[int, str] = {}
        self.not_before: dict[int, float] = {}
        self.fenced_backoff_s = 5.0
        self.timers_next_at = 0.0
        self.consumer: AIOKafkaConsumer = None  # type: ignore[assignment]
        self.stats = {"commands": 0, "events": 0, "transactions": 0, "fenced": 0, "rebuilds": 0, "undecidable": 0}
        # Commands whose deciding raised a defect: after the rebuild they are refused, not retried
        # forever. Lost with the process, which is safe: a successor meets the defect once more.
        self.undecidable: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await kafka.ensure_topics(self.settings)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=self.settings.processor_group,
            enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest", max_poll_records=self.settings.batch_max,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=min(1000, self.settings.session_timeout_ms // 3),
            rebalance_timeout_ms=60000, max_poll_interval_ms=300000)
        self.consumer.subscribe([self.settings.commands_topic], listener=Listener(self))
        await self.consumer.start()
        try:
            while not stop.is_set():
                await self.acquire_assigned()
                batches = await self.consumer.getmany(
                    timeout_ms=self.poll_ms(), max_records=self.settings.batch_max * max(1, len(self.owners)))
                for tp, records in batches.items():
                    self.enqueue(tp, records)
                await self.fire_timers()
        finally:
            for partition in list(self.owners):
                await self.release(partition)
            await self.consumer.stop()

    def poll_ms(self) -> int:
        return int(self.settings.timer_interval_s * 1000)

    @property
    def healthy(self) -> bool:
        return not self.broken

    # -- ownership ---------------------------------------------------------------------------
    async def acquire_assigned(self) -> None:
        for tp in self.consumer.assignment():
            if (tp.partition not in self.owners and tp.partition not in self.broken
                    and time.monotonic() >= self.not_before.get(tp.partition, 0.0)):
                await self.acquire(tp)

    async def acquire(self, tp: TopicPartition) -> None:
        """Fence the previous owner, rebuild the partition's state, then resume its commands."""
        producer = kafka.transactional_producer(self.settings, tp.partition)
        owner = PartitionOwner(tp.partition, producer)
        try:
            await producer.start()
            await self.rebuild(owner)
            committed = await self.consumer.committed(tp)
        except ChainBroken as error:
            await producer.stop()
            self.broken[tp.partition] = str(error)
            log.critical("partition %s stopped, chain broken: %s", tp.partition, error)
            return
        except KafkaError as error:
            await producer.stop()
            self.not_before[tp.partition] = time.monotonic() + 1.0
            log.warning("could not take partition %s yet: %r", tp.partition, error)
            return
        self.consumer.seek(tp, committed or 0)
        self.owners[tp.partition] = owner
        self.consumer.resume(tp)
        log.info("owning partition %s (%s tenants, from offset %s)", tp.partition,
                 len(owner.tenants), committed or 0)

    async def release(self, partition: int) -> None:
        owner = self.owners.pop(partition, None)
        if owner is None:
            return
        async with owner.lock:
            await owner.producer.stop()
        await asyncio.gather(*(t for t in (owner.worker, owner.timer) if t), return_exceptions=True)
        log.info("released partition %s", partition)

    async def rebuild(self, owner: PartitionOwner) -> None:
        """Replay the partition's events and replies into fresh tenant state."""
        self.stats["rebuilds"] += 1
        owner.tenants.clear()
        reader = kafka.reader(self.settings)
        await reader.start()
        try:
            events = TopicPartition(self.settings.events_topic, owner.partition)
            replies = TopicPartition(self.settings.replies_topic, owner.partition)
            reader.assign([events, replies])
            async for record in kafka.read_partition(reader, events):
                env = decode(record.value)
                owner.tenant(env["tenant_id"]).apply(env)
            async for record in kafka.read_partition(reader, replies):
                reply = json.loads(record.value)
                owner.tenant(reply["tenant_id"]).remember(reply)
        finally:
            await reader.stop()

    # -- deciding and appending --------------------------------------------------------------
    def enqueue(self, tp: TopicPartition, records: list) -> None:
        """Hand records to the partition's worker; pause the partition while its backlog is full.

        Each owned partition commits on its own, so one slow transaction never holds back the
        others, and whatever arrives while a transaction is open joins the next one.
        """
        owner = self.owners.get(tp.partition)
        if owner is None:
            return
        owner.pending.extend(records)
        if len(owner.pending) >= self.settings.batch_max:
            self.consumer.pause(tp)
        if owner.worker is None or owner.worker.done():
            owner.worker = asyncio.create_task(self.drain(tp, owner), name=f"partition-{tp.partition}")

    async def drain(self, tp: TopicPartition, owner: PartitionOwner) -> None:
        while owner.pending and self.owners.get(tp.partition) is owner:
            records = owner.pending[:self.settings.batch_max]
            del owner.pending[:len(records)]
            await self.process(tp, records)
            if self.owners.get(tp.partition) is owner and len(owner.pending) < self.settings.batch_max:
                self.consumer.resume(tp)

    async def process(self, tp: TopicPartition, records: list) -> None:
        owner = self.owners.get(tp.partition)
        if owner is None:
            return
        commands = [c for c in map(self.parse, records) if c is not None]
        await self.guarded(owner, commands, {tp: records[-1].offset + 1}, reply=True)

    def parse(self, record: Any) -> dict[str, Any] | None:
        try:
            command = json.loads(record.value)
        except ValueError:
            command = None
        if not isinstance(command, dict) or "command_id" not in command:
            log.error("skipping unreadable command record at offset %s", record.offset)
            return None
        return command

    async def guarded(self, owner: PartitionOwner, commands: list[dict[str, Any]],
                      offsets: dict[TopicPartition, int] | None, reply: bool) -> None:
        """Run one transaction; on any failure drop the partition so it is re-acquired afresh."""
        async with owner.lock:
            if self.owners.get(owner.partition) is not owner:
                return
            try:
                await self.transact(owner, commands, offsets, reply)
            except ProducerFenced:
                self.stats["fenced"] += 1
                await self.drop(owner, "fenced: another processor owns it", self.fenced_backoff_s)
            except Undecidable as error:
                self.stats["undecidable"] += 1
                self.undecidable[error.command_id] = error.kind
                log.exception("partition %s: %s; rebuilding, then refusing it", owner.partition, error)
                await self.drop(owner, f"transaction aborted ({error})", 0.0)
            except (Inconsistent, ChainBroken, KafkaError) as error:
                await self.drop(owner, f"transaction failed ({error!r})", 0.0)
            except Exception as error:  # a defect outside deciding: never leave state ahead of the log
                log.exception("partition %s: transaction failed", owner.partition)
                await self.drop(owner, f"transaction failed ({error!r})", 1.0)

    async def transact(self, owner: PartitionOwner, commands: list[dict[str, Any]],
                       offsets: dict[TopicPartition, int] | None, reply: bool) -> None:
        producer = owner.producer
        async with producer.transaction():
            sends = []
            now = self.clock()
            for command in commands:
                outcome, envelopes = self.decide(owner.tenant(command["tenant_id"]), command, now)
                for env in envelopes:
                    sends.append(await producer.send(
                        self.settings.events_topic, value=encode(env),
                        key=env["tenant_id"].encode(), partition=owner.partition,
                        headers=cloudevents_headers(env)))
                if reply:
                    sends.append(await producer.send(
                        self.settings.replies_topic, value=kafka.dumps(outcome),
                        key=command["tenant_id"].encode(), partition=owner.partition))
                self.stats["events"] += len(envelopes)
            await asyncio.gather(*sends)
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.settings.processor_group)
        self.stats["transactions"] += 1
        self.stats["commands"] += len(commands)

    def decide(self, ledger: TenantLedger, command: dict[str, Any], now: datetime) -> tuple[dict, list[dict]]:
        kind = self.undecidable.get(command["command_id"])
        return (ledger.refuse_undecidable(command, kind), []) if kind else ledger.execute(command, now)

    async def drop(self, owner: PartitionOwner, why: str, backoff_s: float) -> None:
        """Forget a partition's state; the main loop re-acquires it (fence, replay) if still ours."""
        log.warning("dropping partition %s: %s", owner.partition, why)
        self.owners.pop(owner.partition, None)
        self.consumer.pause(TopicPartition(self.settings.commands_topic, owner.partition))
        self.not_before[owner.partition] = time.monotonic() + backoff_s
        await owner.producer.stop()

    # -- timers ------------------------------------------------------------------------------
    async def fire_timers(self) -> None:
        """Every timer interval, expire what is due, as a transaction queued behind the partition's work."""
        if time.monotonic() < self.timers_next_at:
            return
        self.timers_next_at = time.monotonic() + self.settings.timer_interval_s
        now = self.clock()
        for owner in list(self.owners.values()):
            if owner.timer is not None and not owner.timer.done():
                continue
            due = [expire_command(t.tenant_id, a, now)
                   for t in owner.tenants.values() for a in t.due_expiries(now)]
            if due:
                owner.timer = asyncio.create_task(self.guarded(owner, due, None, reply=False))
