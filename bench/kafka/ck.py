"""The transactional path and raw produce with confluent-kafka (librdkafka), driven from asyncio as an adapter would.

`produce` only queues (a C call, no I/O) and runs on the event loop; every call that waits on
the broker (consume, send_offsets_to_transaction, commit_transaction, init_transactions, flush)
runs on one worker thread of the cell's own, so the loop never blocks. Offsets go to the
transaction with the consumer's group metadata (KIP-447: the broker fences a zombie by group
generation, so one producer per process would do; here, as with aiokafka, one per cell). No
per-record delivery callback in a transaction: commit_transaction fails if any record failed.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bench.kafka.cell import Cell, CpuClock, Raw
from bench.kafka.records import EVENT, HEADERS, REPLY
from bench.kafka.topics import Topics

CLIENT = "confluent-kafka"
DEFAULT_BACKOFF_MS = 100  # librdkafka's retry.backoff.ms


def label(retry_backoff_ms: int) -> str:
    return CLIENT if retry_backoff_ms != DEFAULT_BACKOFF_MS else f"{CLIENT} (defaults)"


def transactional(bootstrap: str, transactional_id: str, linger_ms: int, retry_backoff_ms: int) -> Producer:
    """retry.backoff.ms also paces the retry of AddPartitionsToTxn/AddOffsetsToTxn after CONCURRENT_TRANSACTIONS
    (the previous transaction's markers still being written): at librdkafka's default 100 ms, back-to-back
    transactions wait about that long each (confluent-kafka-python#967; the Java client uses 20 ms, KAFKA-5477)."""
    return Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                     "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms,
                     "retry.backoff.ms": retry_backoff_ms, "batch.size": 1024 * 1024,
                     "transaction.timeout.ms": 30000})


def consumer_for(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    return consumer


class Blocking:
    """Run a blocking client call on a thread of its own, awaited from the loop."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdkafka-call")

    async def __call__(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def produce(producer: Producer, topic: str, value: bytes, key: bytes, headers=None) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=0, headers=headers)
            return
        except BufferError:  # the local queue is full: serve delivery reports, then retry
            producer.poll(0.005)


async def transact(producer: Producer, consumer: Consumer, topics: Topics, records: list, call: Blocking) -> None:
    producer.begin_transaction()  # local: no broker round trip until the first record or offsets
    try:
        for record in records:
            produce(producer, topics.events, EVENT, record.key(), HEADERS)
            produce(producer, topics.replies, REPLY, record.key())
        offsets = [TopicPartition(topics.commands, 0, records[-1].offset() + 1)]
        await call(producer.send_offsets_to_transaction, offsets, consumer.consumer_group_metadata())
        await call(producer.commit_transaction)
    except KafkaException:
        await call(producer.abort_transaction)
        raise


async def run_cell(cell: Cell, bootstrap: str, topics: Topics, linger_ms: int,
                   retry_backoff_ms: int = DEFAULT_BACKOFF_MS) -> Cell:
    """Consume batches of up to cell.batch commands and commit one transaction each, until the window ends."""
    group = f"{topics.prefix}.{CLIENT}-{retry_backoff_ms}.b{cell.batch}"
    call = Blocking()
    producer = transactional(bootstrap, f"{group}.tx", linger_ms, retry_backoff_ms)
    consumer = consumer_for(bootstrap, group, topics.commands)
    try:
        await call(producer.init_transactions, 30)
        consumed = 0
        while not cell.done() and consumed < topics.commands_count:
            records = await call(consumer.consume, cell.batch, 1.0)
            errors = [r.error() for r in records if r.error()]
            if errors:
                raise KafkaException(errors[0])
            if not records:
                continue
            began = time.perf_counter()
            await transact(producer, consumer, topics, records, call)
            cell.committed(len(records), began)
            consumed += len(records)
        cell.close()
        return cell
    finally:
        await call(consumer.close)
        await call(producer.flush, 10)
        call.close()


async def raw_produce(bootstrap: str, topic: str, count: int) -> Raw:
    """`count` records (events and replies alternating) without transactions: idempotent, acks=all, linger 5 ms,
    a delivery callback per record (what a port's per-record `Delivered` would need)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "batch.size": 1024 * 1024})
    failed: list = []

    def delivered(error, _message) -> None:
        if error is not None:
            failed.append(error)

    call = Blocking()
    try:
        producer.produce(topic, REPLY, b"k", partition=0)  # connect and get a producer id before the clock starts
        await call(producer.flush, 30)
        with CpuClock() as clock:
            for n in range(count):
                value, headers = (EVENT, HEADERS) if n % 2 == 0 else (REPLY, None)
                while True:
                    try:
                        producer.produce(topic, value, b"k", partition=0, headers=headers, on_delivery=delivered)
                        break
                    except BufferError:
                        await call(producer.poll, 0.005)
                if n % 5000 == 4999:
                    producer.poll(0)
                    await asyncio.sleep(0)
            left = await call(producer.flush, 60)
        if left or failed:
            raise RuntimeError(f"confluent raw produce: {left} undelivered, {len(failed)} failed ({failed[:1]})")
        return Raw(CLIENT, count, clock.seconds, clock.cpu)
    finally:
        call.close()
