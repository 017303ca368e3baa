"""Feed one projection from `ledger.events`: resume from the sink's position, verify, apply.

At-least-once delivery with an exactly-once effect: on every assignment the runner seeks to the
position stored with the projection's rows (not Kafka's committed offset), and every batch's rows
and new position are written together. The position is also committed to Kafka afterwards, only
so that Kafka's own tools (kafka-consumer-groups) report the same lag.

The chain is verified as it is applied. A record that is not an envelope (not JSON, not an object,
a value the hash rule cannot canonicalise), a gap, a bad hash, an unknown event type or a schema
version newer than this code stops the projector (it records why, naming partition and offset, and
reports FAILED) instead of skipping anything; nothing of that poll is stored, so the position stays
before the bad record. Any other error (a database down, say) is retried from the stored position.
"""
import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from domain.registry import EVENT_CLASSES, schema_version_of
from infra import kafka
from infra.settings import Settings
from projectors.base import Batch, Envelope, Projection
from projectors.pg import SchemaSwapped
from schemas.chain import ChainVerifier
from schemas.envelope import decode

log = logging.getLogger("runledger.projector")


class ProjectionHalted(Exception):
    """The log cannot be applied past this point; the reason names the record (partition, offset) and why."""


JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def decoded(value: bytes | None) -> tuple[Envelope, str | None]:
    """Return the envelope a record value holds, or why it holds none (which no retry can change)."""
    if value is None:
        return {}, "the record has no value (a tombstone)"
    try:
        env = decode(value)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, a number too long, nested too deep
        return {}, f"the value is not JSON ({error})"
    if not isinstance(env, dict):
        return {}, f"the value is {JSON_KINDS.get(type(env), 'null')}, not an envelope object"
    if not isinstance(env.get("tenant_id"), str):
        return {}, f"the envelope's tenant_id is {env.get('tenant_id')!r}, not a string"
    return env, None


def envelope_of(partition: int, record: ConsumerRecord) -> Envelope:
    env, problem = decoded(record.value)
    if problem:
        raise ProjectionHalted(f"{place(partition, record, key=True)}: {problem}")
    return env


def place(partition: int, record: ConsumerRecord, key: bool = False) -> str:
    """Name a record's position in the log, and (key=True) the tenant its key names, if it has one."""
    where = f"partition {partition} offset {record.offset}"
    return f"{where}, tenant {record.key.decode(errors='replace')!r} (record key)" if key and record.key else where


def check(partition: int, record: ConsumerRecord, env: Envelope, verifier: ChainVerifier) -> None:
    """Accept env as its tenant's next event, or halt naming the record and why it cannot follow."""
    if problem := problem_of(env, verifier):
        raise ProjectionHalted(f"{place(partition, record)}, tenant {verifier.tenant_id} "
                               f"chain_seq {verifier.head_seq + 1}: {problem}")
    verifier.accept(env)


def problem_of(env: Envelope, verifier: ChainVerifier) -> str | None:
    """Why env cannot follow verifier's head, or None. The checks are pure: what they raise, they always will."""
    try:
        return readable_problem(env) or verifier.problem_with(env)
    except (ValueError, TypeError, RecursionError) as error:  # e.g. RFC 8785 refuses NaN or an integer beyond 2^53
        return f"the envelope cannot be checked ({error!r})"


def readable_problem(env: Envelope) -> str | None:
    cls = EVENT_CLASSES.get(env.get("type"))
    if cls is None:
        return f"unknown event type {env.get('type')!r}"
    if env.get("schema_version", 0) > schema_version_of(cls):
        return f"{env['type']} schema_version {env['schema_version']} is newer than this code reads"
    return None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: "ProjectorRunner"):
        self.runner = runner

    async def on_partitions_revoked(self, revoked):
        pass

    async def on_partitions_assigned(self, assigned):
        self.runner.unpositioned.update(assigned)
        if assigned:
            self.runner.consumer.pause(*assigned)


class ProjectorRunner:
    retry_delay_s = 1.0  # after a transient error, before reading again from the stored position

    def __init__(self, settings: Settings, projection: Projection, batch_max: int = 5000):
        self.settings = settings
        self.projection = projection
        self.batch_max = batch_max
        self.group = f"{settings.topic_prefix}.projector.{projection.name}"
        self.verifiers: dict[str, ChainVerifier] = {}
        self.unpositioned: set[TopicPartition] = set()
        self.failed: str | None = None
        self.last_error: str | None = None
        self.applied = 0
        self.consumer: AIOKafkaConsumer = None  # type: ignore[assignment]

    async def run(self, stop: asyncio.Event) -> None:
        await kafka.ensure_topics(self.settings)
        self.failed = await self.projection.failure()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=self.group,
            enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
            # Let the broker gather a batch for up to linger_ms: a write per trickling event would
            # cost a transaction (Postgres) or a part (ClickHouse) each and starve the event loop.
            fetch_min_bytes=1024 * 1024, fetch_max_wait_ms=self.projection.linger_ms)
        self.consumer.subscribe([self.settings.events_topic], listener=_Listener(self))
        await self.consumer.start()
        try:
            while not stop.is_set():
                if self.failed:
                    await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=1.0)
                    continue
                await self.position_assigned()
                fetched = await self.consumer.getmany(timeout_ms=200, max_records=self.batch_max)
                await self.guarded(fetched)
        finally:
            await self.consumer.stop()

    async def position_assigned(self) -> None:
        if not self.unpositioned:
            return
        positions = await self.projection.positions()
        for tp in list(self.unpositioned):
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, positions[tp.partition].next_offset if tp.partition in positions else 0)
                self.consumer.resume(tp)
        self.unpositioned.clear()
        self.verifiers.clear()

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
        """Verify a poll's records, then store all its partitions' batches in one apply."""
        heads: dict[str, ChainVerifier] = {}
        batches = [await self.verified_batch(tp, records, heads) for tp, records in fetched.items()]
        await self.projection.apply(batches)
        self.verifiers.update(heads)
        self.applied += sum(len(b.envelopes) for b in batches)
        await self.consumer.commit({tp: OffsetAndMetadata(b.next_offset, "") for tp, b in zip(fetched, batches)})

    async def verified_batch(self, tp: TopicPartition, records: list, heads: dict[str, ChainVerifier]) -> Batch:
        envelopes = [await self.verified(tp.partition, r, heads) for r in records]
        return Batch(tp.partition, envelopes, max(records[-1].offset + 1, await self.consumer.position(tp)))

    async def verified(self, partition: int, record: ConsumerRecord, heads: dict[str, ChainVerifier]) -> Envelope:
        """Decode a record and check it against its tenant's head as it stands after the poll's earlier events."""
        env = envelope_of(partition, record)
        tenant = env["tenant_id"]
        if tenant not in heads:
            known = self.verifiers.get(tenant)
            seq, hash_ = (known.head_seq, known.head_hash) if known else await self.projection.head(tenant)
            heads[tenant] = ChainVerifier(tenant, seq, hash_)
        check(partition, record, env, heads[tenant])
        return env

    @property
    def healthy(self) -> bool:
        return self.failed is None
