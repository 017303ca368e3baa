"""The event log port for the processor role on confluent-kafka (librdkafka): its group consumer, its fenced
transactional writers and its rebuild readers (docs/adr/0013-kafka-client.md).

The fencing model is the aiokafka adapter's: one `transactional.id` per command partition, so a new owner's
`init_transactions` fences the old one at the broker. Offsets go to a transaction with the consumer's group
metadata (KIP-447: the broker also refuses them from a member of an older generation). `produce` only queues
(a C call) and runs on the loop; every call that waits on the broker runs on the client's own single-thread
executor (confluent_mapping.py: `Blocking` and the error mapping; confluent_group.py: the group consumer). No
per-record delivery callback: `commit_transaction` fails if any queued record failed, which is what the port promises.

The plain producer, the tail and topic admin are the API's and the CLI's business, still aiokafka's (the ADR
measured only the transactional path): this log inherits them from KafkaLog.
"""
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable

import confluent_kafka as ck
from confluent_kafka import KafkaException

from infra.adapters.backoff import Backoff
from infra.adapters.eventlog.confluent_group import ConfluentGroupConsumer
from infra.adapters.eventlog.confluent_mapping import TIMEOUT_S, Blocking, fenced, fetch, ported, records_of, theirs
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.eventlog.port import (Fenced, GroupConsumer, LogError, Moved, PartitionReader, Record,
                                         TopicPartition, TransactionalWriter)
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.eventlog")

STOP_TIMEOUT_S = 3.0  # the most a writer's stop waits for the broker (serve has 20 s in all to end: dumps.py)


def writer_config(settings: Settings, transactional_id: str) -> dict:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "transactional.id": transactional_id,  # one per command partition: the broker fences a deposed owner
        "enable.idempotence": True,  # a record retried inside the client is written once (and transactions need it)
        "acks": "all",  # a record is held once every in-sync replica holds it
        # A transaction's records are needed only at its commit, and commit_transaction flushes at once, whatever
        # linger.ms says (rd_kafka_flush ignores it): so no request per record while the batch is decided (at
        # linger 0 librdkafka sent one Produce per record or two, and the broker spent 2.5x the CPU: docs/adr/0013)
        "linger.ms": 100,
        # librdkafka's default 100 ms also paces the retry of AddPartitionsToTxn/AddOffsetsToTxn after
        # CONCURRENT_TRANSACTIONS (the previous transaction's markers still being written): back-to-back
        # transactions stalled ~100 ms each (docs/bench-kafka.md; confluent-kafka-python#967)
        "retry.backoff.ms": 5,
        "batch.size": 1024 * 1024,  # as the aiokafka writer's max_batch_size: a batch of 1,000 events in few requests
        "transaction.timeout.ms": 30000,  # as aiokafka's: a writer that vanished mid-transaction is aborted by then
        "logger": log,
    }


def consumer_config(settings: Settings, group: str, tuning: dict[str, int]) -> dict:
    names = {"session_timeout_ms": "session.timeout.ms", "heartbeat_interval_ms": "heartbeat.interval.ms",
             "max_poll_interval_ms": "max.poll.interval.ms"}
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",  # never a command of an aborted transaction (or a pending one)
        "enable.auto.commit": False,  # offsets are committed with the transactions only
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a partition with no committed offset is read from its start
        # eager, as aiokafka's and the twin's: every partition is revoked before any is assigned, which is when
        # Ownership's on_revoked runs (cooperative-sticky would change that)
        "partition.assignment.strategy": "range",
        "fetch.wait.max.ms": 500,  # as aiokafka's fetch_max_wait_ms: the broker's idle fetch rate stays the same
        "logger": log,
    }
    # librdkafka has no separate rebalance timeout: max.poll.interval.ms is it (rebalance_timeout_ms is aiokafka's)
    config.update({names[k]: v for k, v in tuning.items() if k in names})
    return config


def reader_config(settings: Settings) -> dict:
    return {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.topic_prefix}.processor.reader",
            "isolation.level": "read_committed", "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,  # as the aiokafka reader's: a rebuild ends soon
            "max.partition.fetch.bytes": 8 * 1024 * 1024, "fetch.max.bytes": 32 * 1024 * 1024, "logger": log}


class ConfluentWriter(TransactionalWriter):
    def __init__(self, settings: Settings, transactional_id: str):
        self.id = transactional_id
        self.producer = ck.Producer(writer_config(settings, transactional_id))
        self.call = Blocking("rdkafka-writer")
        self.open = False
        self.dead = False  # fenced: never used again

    def mapped(self, doing: str):
        return ported(f"{doing} ({self.id})")

    async def start(self) -> None:
        with self.mapped("cannot initialise the transactional id"):
            await self.call(self.producer.init_transactions, TIMEOUT_S)

    async def stop(self) -> None:
        """Bounded: an open transaction gets STOP_TIMEOUT_S to abort; if it does not, the producer is dropped
        without `close()` (which would abort it again, and flush, with no bound: a serve that never exited on
        SIGTERM was stuck there), and what it left open is aborted by a successor's `init_transactions` or by the
        broker after transaction.timeout.ms."""
        try:
            clean = await self.abort(STOP_TIMEOUT_S) if self.open and not self.dead else True
            await self.call(self.close if clean else self.drop)
        except (KafkaException, RuntimeError) as error:
            log.warning("closing writer %s: %r", self.id, error)
        finally:
            self.call.close()

    def close(self) -> None:  # on the writer's thread: nothing left open, so nothing to wait for
        self.producer.purge()
        self.producer.close()

    def drop(self) -> None:  # on the writer's thread, where the handle is then destroyed
        self.producer.purge()
        self.producer = None

    async def abort(self, timeout_s: float = TIMEOUT_S) -> bool:
        """Abort the open transaction; whether it was (or the writer was fenced: nothing of it can commit)."""
        try:
            with self.mapped("cannot abort the transaction"):
                await self.call(self.producer.abort_transaction, timeout_s)
            return True
        except Fenced:
            self.dead = True
            return True
        except LogError as error:
            log.warning("%s", error)
            return False
        finally:
            self.open = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self.dead:
            raise Fenced(f"writer {self.id} was fenced")
        with self.mapped("cannot begin a transaction"):
            self.producer.begin_transaction()  # local: no broker round trip until the first record or offsets
        self.open = True
        try:
            yield
        except Fenced:
            self.dead, self.open = True, False
            raise
        except BaseException:
            await self.abort()
            raise
        try:
            await self.call(self.producer.commit_transaction, TIMEOUT_S)  # flushes first: fails if a record did
        except KafkaException as exc:
            error = exc.args[0]
            if fenced(error) or error.fatal():
                self.dead = True
                raise Fenced(f"cannot commit ({self.id}): {error.str()}") from exc
            if error.txn_requires_abort():
                await self.abort()
            raise LogError(f"cannot commit ({self.id}): {error.str()}") from exc
        finally:
            self.open = False

    async def send(self, topic: str, value: bytes, key: bytes | None, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[None]:
        while True:
            try:
                with self.mapped(f"cannot send to {topic}"):
                    self.producer.produce(topic, value, key, partition=partition, headers=headers)
                return Flushed(self)
            except LogError as error:
                if not isinstance(error.__cause__, BufferError):
                    if isinstance(error, Fenced):
                        self.dead = True
                    raise
            await self.call(self.producer.poll, 0.005)  # the local queue is full: let it drain, then again

    async def send_offsets(self, offsets: dict[TopicPartition, int], consumer: GroupConsumer) -> None:
        if not isinstance(consumer, ConfluentGroupConsumer):
            raise LogError(f"a confluent-kafka writer commits the offsets of a confluent-kafka consumer, not {consumer!r}")
        try:
            with self.mapped("cannot send the offsets"):
                await self.call(self.producer.send_offsets_to_transaction,
                                [theirs(tp, o) for tp, o in offsets.items()], consumer.group_metadata(), TIMEOUT_S)
        except Fenced:
            self.dead = True
            raise


class Flushed:
    """What a send returns: awaited (a test's choice, never the processor's), it flushes the writer's queue, so the
    log holds the record; left alone, it costs nothing (no delivery callback per record)."""

    def __init__(self, writer: ConfluentWriter):
        self.writer = writer

    def __await__(self):
        return self.flush().__await__()

    async def flush(self) -> None:
        with self.writer.mapped("cannot deliver"):
            left = await self.writer.call(self.writer.producer.flush, TIMEOUT_S)
        if left:
            raise LogError(f"cannot deliver ({self.writer.id}): {left} records still queued after {TIMEOUT_S} s")


class ConfluentReader(PartitionReader):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.consumer: ck.Consumer | None = None
        self.call = Blocking("rdkafka-reader")

    async def start(self) -> None:
        self.consumer = ck.Consumer(reader_config(self.settings))
        with ported("cannot connect a reader"):
            await self.call(self.consumer.list_topics, None, TIMEOUT_S)

    async def stop(self) -> None:
        try:
            if self.consumer is not None:
                await self.call(self.consumer.close)
        finally:
            self.call.close()

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {}
        with ported("cannot read the end offsets"):
            for tp in tps:  # read_committed: the high watermark librdkafka answers is the last stable offset
                _, ends[tp] = await self.call(self.consumer.get_watermark_offsets, theirs(tp), TIMEOUT_S, False)
        return ends

    async def read(self, tp: TopicPartition, start: int = 0, end: int | None = None) -> AsyncIterator[Record]:
        if end is None:
            end = (await self.end_offsets([tp]))[tp]
        if end <= start:
            return
        with ported(f"cannot read {tp}"):
            self.consumer.assign([theirs(tp, start)])
        while True:
            with ported(f"cannot read {tp}"):
                messages = await self.call(fetch, self.consumer, 5000, 1.0)
            for record in records_of(messages, f"reading {tp}"):
                if record.offset >= end:
                    return
                yield record
            (position,) = self.consumer.position([theirs(tp)])  # past the commit markers too
            if position.offset >= end:
                return


class ConfluentLog(KafkaLog):
    """KafkaLog with the processor's clients on confluent-kafka: group consumer, writers and readers."""

    def __init__(self, settings: Settings, patience: Backoff | None = None):
        super().__init__(settings, patience)

    def group_consumer(self, topics: list[str], group: str, on_assigned: Moved, on_revoked: Moved,
                       max_poll_records: int = 500, **tuning: int) -> GroupConsumer:
        return ConfluentGroupConsumer(consumer_config(self.settings, group, tuning), topics,
                                      on_assigned, on_revoked, self.patience)

    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        return ConfluentWriter(self.settings, transactional_id)

    def reader(self) -> PartitionReader:
        return ConfluentReader(self.settings)


def processor_log(settings: Settings, patience: Backoff | None = None) -> KafkaLog:
    """The processor role's log: RUNLEDGER_PROCESSOR_KAFKA_CLIENT picks confluent-kafka or aiokafka."""
    return (ConfluentLog if settings.processor_kafka_client == "confluent" else KafkaLog)(settings, patience)
