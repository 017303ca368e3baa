"""The command processor: the single writer of each tenant chain.

It is a member of a consumer group over `ledger.commands`. For every partition it owns it runs
one transactional producer whose `transactional.id` names the partition, so when ownership
moves the new owner's `init_transactions` fences the old one at the broker and aborts its open
transaction. Only after fencing does the new owner replay `ledger.events` and `ledger.replies`
(read_committed) to rebuild chain heads, aggregates, idempotency records and timers, and only
then does it read the committed command offset and start deciding. Each batch of commands, the
events they produce, their replies and the command offset commit in one Kafka transaction.

The log is RUNLEDGER_PROCESSOR_KAFKA_CLIENT's: confluent-kafka (librdkafka) or aiokafka, behind the same port
(infra/adapters/eventlog/confluent.py, docs/adr/0013-kafka-client.md).
"""
import asyncio
import logging
from datetime import datetime, timezone
from typing import AsyncContextManager, Callable

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from commands.content import ContentKeys
from commands.ownership import Ownership, PartitionOwner
from commands.snapshots import SnapshotStore
from commands.snapshots_pg import PgSnapshots
from commands.timers import Timers
from commands.worker import Worker
from infra.adapters.eventlog import EventLog, GroupConsumer, LogError
from infra.adapters.eventlog.confluent import processor_log
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.keys import KeyStore
from infra.adapters.meters import processor_meters
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.processor")

__all__ = ["CommandProcessor", "PartitionOwner"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CommandProcessor:
    """The loop: acquire what is assigned, keep the owned partitions flowing, hand records to workers, fire timers."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow, log_: EventLog | None = None,
                 keys: KeyStore | None = None, open_keys: Callable[[], AsyncContextManager[KeyStore]] | None = None,
                 tracer: Tracer | None = None, meter: Meter | None = None, snapshots: SnapshotStore | None = None):
        """`keys`: the data-key store; or `open_keys`, opened inside `run` (on the processor's own loop).
        `tracer`: where its spans go (default: the process's provider; commands/tracing.py); `meter`: its
        metrics (default: the process's; infra/adapters/meters.py). `snapshots`: where fold snapshots are kept
        (default: PostgreSQL beside a Kafka log, none beside the in-memory twin; docs/adr/0012)."""
        self.open_keys = open_keys
        self.settings = settings
        self.log = log_ or processor_log(settings)
        self.stats = {"commands": 0, "events": 0, "transactions": 0, "fenced": 0, "rebuilds": 0,
                      "undecidable": 0, "healed": 0, "stumbled": 0}
        if snapshots is None and isinstance(self.log, KafkaLog) and settings.snapshot_every:
            snapshots = PgSnapshots(settings.database_url)
        meters = processor_meters(settings.commands_topic, settings.processor_group, meter)
        self.ownership = Ownership(settings, self.log, self.stats, ContentKeys(keys), meters, snapshots)
        self.worker = Worker(settings, self.ownership, clock, self.stats, tracer, meters)
        meters.observe_partitions(lambda: len(self.owners), lambda: len(self.broken))
        self.timers = Timers(settings.timer_interval_s, self.ownership, self.worker, clock,
                             settings.retention_sweep_interval_s, settings.checkpoint_interval_s,
                             settings.checkpoint_every)
        self.consumer: GroupConsumer = None  # type: ignore[assignment]

    @property
    def owners(self) -> dict[int, PartitionOwner]:
        return self.ownership.owners

    @property
    def broken(self) -> dict[int, str]:
        return self.ownership.broken

    @property
    def fenced_backoff_s(self) -> float:
        return self.ownership.fenced_backoff_s

    @fenced_backoff_s.setter
    def fenced_backoff_s(self, value: float) -> None:
        self.ownership.fenced_backoff_s = value

    @property
    def healthy(self) -> bool:
        return not self.broken

    @property
    def assigned(self) -> set[int] | None:
        """The command partitions the group gave this member (owned once acquired); None before it has a consumer."""
        return {tp.partition for tp in self.consumer.assignment()} if self.consumer else None

    async def run(self, stop: asyncio.Event) -> None:
        if self.open_keys is None:
            return await self.serve(stop)
        async with self.open_keys() as store:
            self.ownership.content.store = store
            await self.serve(stop)

    async def session_timeout_ms(self) -> int:
        """The configured session timeout, or the broker's floor if higher (the broker refuses a shorter one)."""
        wanted, floor = self.settings.session_timeout_ms, await self.log.session_floor_ms()
        if floor is None or floor <= wanted:
            return wanted
        log.warning("the broker's group.min.session.timeout.ms is %s ms, above RUNLEDGER_SESSION_TIMEOUT_MS (%s ms): "
                    "joining with %s ms, so a killed processor's partitions move only after that long; set the "
                    "broker's to at most %s (docs/bench-failover.md)", floor, wanted, floor, wanted)
        return floor

    async def serve(self, stop: asyncio.Event) -> None:
        await self.log.ensure_topics()
        session_ms = await self.session_timeout_ms()
        self.consumer = self.ownership.consumer = self.log.group_consumer(
            [self.settings.commands_topic], self.settings.processor_group, self.ownership.on_assigned,
            self.ownership.on_revoked, max_poll_records=self.settings.batch_max,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(self.settings.heartbeat_interval_ms, session_ms // 3),
            rebalance_timeout_ms=60000, max_poll_interval_ms=300000)
        await self.consumer.start()
        follower = self.ownership.follower
        following = asyncio.get_running_loop().create_task(follower.run(stop), name="follower") if follower else None
        try:
            while not stop.is_set():
                await self.steady()
        finally:
            if following is not None:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            await self.ownership.release_all()
            await self.consumer.stop()

    async def steady(self) -> None:
        """One turn, whatever goes wrong in it: the role stays up, and each partition's own guard heals it."""
        try:
            await self.step()
        except Exception:  # noqa: BLE001 - a partition moving mid-turn, a broker error: never a reason to exit
            self.stats["stumbled"] += 1
            log.exception("a turn of the processor failed; going on")
            await asyncio.sleep(0.5)

    async def step(self) -> None:
        """One turn of the loop; a partition that moves away mid-turn is the next turn's business."""
        await self.ownership.acquire_assigned()
        self.ownership.heal()
        try:
            batches = await self.consumer.getmany(self.poll_ms(), self.settings.batch_max * max(1, len(self.owners)))
        except LogError as error:
            log.warning("polling commands failed: %r; polling again", error)
            await asyncio.sleep(0.5)
            return
        for tp, records in batches.items():
            self.worker.enqueue(tp, records)
        self.restart_stalled()
        self.timers.fire()

    def restart_stalled(self) -> None:
        """Drain again an owned partition whose records wait with no worker (a turn that failed mid-enqueue)."""
        for partition, owner in list(self.owners.items()):
            if owner.pending and (owner.worker is None or owner.worker.done()):
                self.worker.enqueue(self.ownership.tp(partition), [])

    def poll_ms(self) -> int:
        return int(self.settings.timer_interval_s * 1000)
