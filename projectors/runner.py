"""Feed one projection from `ledger.events`: resume from the sink's position, verify, apply.

At-least-once delivery with an exactly-once effect: on every assignment the runner seeks to the
position stored with the projection's rows (not Kafka's committed offset), and every batch's rows
and new position are written together. The position is also committed to Kafka afterwards, only
so that Kafka's own tools (kafka-consumer-groups) report the same lag.

The chain is verified as it is applied, and fails closed per tenant (projectors/admit.py): an
event that cannot be checked or stored holds its tenant in this read model, naming partition,
offset, tenant and chain_seq, while every other tenant of the poll is stored. Between polls the
runner replays any held tenant that ops asked to resume. A record that names no tenant at all
stops the whole projector (FAILED). Any other error (a database down, say) is retried from the
stored position, for everyone, as is an error reading the stored positions or holds (so a store
that goes away never ends the runner: health says it is retrying, and since when).
"""
import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Callable

from opentelemetry.trace import Tracer

from infra.adapters import tracing
from infra.adapters.eventlog import EventLog, GroupConsumer, LogError, TopicPartition
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.settings import Settings
from projectors.admit import Admission, ProjectionHalted
from projectors.base import Hold, PositionMoved, Projection
from projectors.generations import SchemaSwapped

log = logging.getLogger("runledger.projector")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def group_of(settings: Settings, projection: Projection) -> str:
    """The projection's consumer group: one for every process, whose members split the partitions, except
    for a store this process keeps to itself (chdb, files) in a named replica: that replica's own group,
    which reads every partition (RUNLEDGER_PROJECTOR_REPLICA, docs/scaling.md)."""
    group = f"{settings.topic_prefix}.projector.{projection.name}"
    return f"{group}.{settings.projector_replica}" if projection.local and settings.projector_replica else group


class ProjectorRunner:
    retry_delay_s = 1.0  # after a transient error, before reading again from the stored position

    def __init__(self, settings: Settings, projection: Projection, batch_max: int = 5000,
                 log_: EventLog | None = None, tracer: Tracer | None = None):
        self.settings = settings
        self.log = log_ or KafkaLog(settings)
        self.tracer = tracer or tracing.tracer()  # a `process` span per poll (infra/adapters/tracing.py)
        self.admission = Admission(projection)
        self.batch_max = batch_max
        self.group = group_of(settings, projection)
        # Told after each stored poll: (projector, events stored, seconds the store took). For
        # metrics and benchmarks, which must not wrap the projection's methods to measure them.
        self.on_applied: list[Callable[[str, int, float], None]] = []
        self.resume_checked = 0.0
        self.unpositioned: set[TopicPartition] = set()
        self._failed: str | None = None
        self._last_error: str | None = None
        self.failed_since: datetime | None = None  # when `failed` was first set in this process
        self.erring_since: datetime | None = None  # when the errors `last_error` tells of began
        self.unread = False  # the last attempt to read the stored positions failed
        self.applied = 0
        self.consumer: GroupConsumer = None  # type: ignore[assignment]

    async def run(self, stop: asyncio.Event) -> None:
        await self.log.ensure_topics()
        if not await self.loaded(stop):
            return
        self.consumer = self.log.group_consumer(
            [self.settings.events_topic], self.group, self.on_assigned, self.on_revoked,
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
            # Let the broker gather a batch for up to linger_ms: a write per trickling event would
            # cost a transaction (Postgres) or a part (ClickHouse) each and starve the event loop.
            fetch_min_bytes=1024 * 1024, fetch_max_wait_ms=self.projection.linger_ms)
        await self.consumer.start()
        try:
            while not stop.is_set():
                if self.failed:
                    await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=1.0)
                    continue
                try:
                    await self.position_assigned()
                except Exception as error:  # the store: read the positions again shortly
                    self.last_error, self.unread = f"reading the stored positions failed: {error!r}", True
                    await asyncio.sleep(self.retry_delay_s)
                    continue
                if self.unread:  # read at last: an idle projector is not left saying it is retrying
                    self.last_error, self.unread = None, False
                await self.resume_requested()
                try:
                    fetched = await self.consumer.getmany(200, self.batch_max)
                except LogError as error:
                    self.last_error = f"reading {self.settings.events_topic} failed: {error!r}"
                    await asyncio.sleep(self.retry_delay_s)
                    continue
                await self.guarded(fetched)
        finally:
            await self.consumer.stop()

    async def loaded(self, stop: asyncio.Event) -> bool:
        """Read the projection's failure and holds, until the store answers or stop is set."""
        while not stop.is_set():
            try:
                self.failed = await self.projection.failure()
                await self.admission.load()
                self.last_error = None
                return True
            except Exception as error:
                self.last_error = f"reading the projection's status failed: {error!r}"
                log.error("projector %s: %s; trying again", self.projection.name, self.last_error)
                await asyncio.sleep(self.retry_delay_s)
        return False

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold new partitions until they are positioned where the projection's own store says."""
        self.unpositioned.update(assigned)
        if assigned:
            self.consumer.pause(*assigned)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def position_assigned(self) -> None:
        if not self.unpositioned:
            return
        positions = await self.projection.positions()
        for tp in list(self.unpositioned):
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, positions[tp.partition].next_offset if tp.partition in positions else 0)
                self.consumer.resume(tp)
        self.unpositioned.clear()
        await self.admission.load()

    async def guarded(self, fetched: dict[TopicPartition, list]) -> None:
        fetched = {tp: records for tp, records in fetched.items() if records and tp not in self.unpositioned}
        if not fetched or self.failed:
            return
        try:
            await self.apply(fetched)
        except ProjectionHalted as halt:
            self.failed = f"projector {self.projection.name} stopped: {halt}"
            log.critical(self.failed)
            await self.projection.record_failure(self.failed)
        except PositionMoved as moved:  # another process of the group stored these first, in a rebalance
            log.info("projector %s: %s; reading again from the stored position", self.projection.name, moved)
            self.reposition_all()
        except SchemaSwapped:
            log.info("projector %s: a rebuilt generation went live; continuing there", self.projection.name)
            await self.projection.open()
            self.reposition_all()
        except Exception as error:
            self.last_error = f"batch on partitions {sorted(tp.partition for tp in fetched)} failed: {error!r}"
            log.error("projector %s: %s; retrying from the stored position", self.projection.name, self.last_error)
            self.reposition_all()
            await asyncio.sleep(self.retry_delay_s)
        else:
            self.last_error = None

    def reposition_all(self) -> None:
        assigned = self.consumer.assignment()
        self.unpositioned.update(assigned)
        if assigned:
            self.consumer.pause(*assigned)

    async def apply(self, fetched: dict[TopicPartition, list]) -> None:
        """Admit a poll's records tenant by tenant, then store all its partitions' batches in one apply."""
        with tracing.polled(self.tracer, self.group, self.projection.name, fetched) as poll:
            await self.store(fetched, poll)

    async def store(self, fetched: dict[TopicPartition, list], poll: tracing.Poll) -> None:
        """Admit and store the poll under its span, tell the observers, then commit its offsets to Kafka."""
        polled = [(tp.partition, records, max(records[-1].offset + 1, await self.consumer.position(tp)))
                  for tp, records in fetched.items()]
        before = set(self.admission.held)
        started = time.perf_counter()
        with poll.storing():
            stored = await self.admission.store(polled)
            poll.stored(stored, len(set(self.admission.held) - before))
        for observer in self.on_applied:
            observer(self.projection.name, stored, time.perf_counter() - started)
        self.applied += stored
        for tenant in set(self.admission.held) - before:
            log.critical("projector %s holds tenant %s: %s", self.projection.name, tenant,
                         self.admission.held[tenant].reason)
        await self.consumer.commit({tp: next_offset for tp, (_, _, next_offset) in zip(fetched, polled)})

    async def resume_requested(self, every_s: float = 1.0) -> None:
        """Replay the held tenants ops asked to resume, on partitions this runner owns (at most once a second).

        Only while some tenant is held: every hold is loaded with each assignment, so with none
        known there is nothing a request could name, and the store is not asked.
        """
        if not self.admission.held or time.monotonic() - self.resume_checked < every_s:
            return
        self.resume_checked = time.monotonic()
        owned = {tp.partition for tp in self.consumer.assignment()}
        try:
            for hold in (await self.projection.holds()).values():
                if hold.resume_requested and hold.partition in owned:
                    await self.resume(hold)
        except PositionMoved as moved:  # another process resumed the tenant, or stored the partition past it
            log.info("projector %s: %s; reading the holds and positions again", self.projection.name, moved)
            self.reposition_all()
        except Exception as error:  # the store or the broker: the request stands, and is tried again
            self.last_error = f"resuming a held tenant failed: {error!r}"
            log.error("projector %s: %s; trying again", self.projection.name, self.last_error)

    async def resume(self, hold: Hold) -> None:
        position = (await self.projection.positions()).get(hold.partition)
        tp = TopicPartition(self.settings.events_topic, hold.partition)
        reader = self.log.reader()
        await reader.start()
        try:
            until = position.next_offset if position else hold.offset
            again = await self.admission.resume(hold, reader.read(tp, hold.offset, until), until)
        finally:
            await reader.stop()
        if again:
            log.critical("projector %s: tenant %s is held again: %s", self.projection.name, hold.tenant_id, again.reason)
        else:
            log.warning("projector %s: tenant %s caught up from chain_seq %d and resumed",
                        self.projection.name, hold.tenant_id, hold.chain_seq)

    @property
    def projection(self) -> Projection:
        return self.admission.projection

    @projection.setter
    def projection(self, projection: Projection) -> None:
        """Point the runner, and the admission that writes through it, at another projection."""
        self.admission.projection = projection

    @property
    def healthy(self) -> bool:
        return self.failed is None

    @property
    def failed(self) -> str | None:
        return self._failed

    @failed.setter
    def failed(self, why: str | None) -> None:
        self.failed_since = None if why is None else self.failed_since or utcnow()
        self._failed = why

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @last_error.setter
    def last_error(self, error: str | None) -> None:
        self.erring_since = None if error is None else self.erring_since or utcnow()
        self._last_error = error
