"""The transactional path and raw produce with aiokafka, configured as the processor's (infra/adapters/kafka.py).

Transactional producer: enable_idempotence, acks=all, linger 0, 1 MiB batches. Offsets go to the
transaction by group id (aiokafka has no KIP-447 group metadata: fencing rests on one
transactional.id per partition). Every send is awaited before the offsets (aiokafka#1098), as
the processor does.
"""
from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.kafka.cell import Cell, CpuClock, Raw
from bench.kafka.records import EVENT, HEADERS, REPLY
from bench.kafka.topics import Topics

CLIENT = "aiokafka"


def transactional(bootstrap: str, transactional_id: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id, enable_idempotence=True,
                            acks="all", linger_ms=linger_ms, max_batch_size=1024 * 1024, transaction_timeout_ms=30000)


async def transact(producer: AIOKafkaProducer, topics: Topics, records: list, group: str) -> None:
    async with producer.transaction():
        sends = []
        for record in records:
            sends.append(await producer.send(topics.events, EVENT, key=record.key, partition=0, headers=HEADERS))
            sends.append(await producer.send(topics.replies, REPLY, key=record.key, partition=0))
        await asyncio.gather(*sends)
        offsets = {TopicPartition(topics.commands, 0): records[-1].offset + 1}
        await producer.send_offsets_to_transaction(offsets, group)


async def run_cell(cell: Cell, bootstrap: str, topics: Topics, linger_ms: int) -> Cell:
    """Consume batches of up to cell.batch commands and commit one transaction each, until the window ends."""
    group = f"{topics.prefix}.{CLIENT}.b{cell.batch}"
    consumer = AIOKafkaConsumer(topics.commands, bootstrap_servers=bootstrap, group_id=group,
                                isolation_level="read_committed", enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=cell.batch)
    producer = transactional(bootstrap, f"{group}.tx", linger_ms)
    await producer.start()
    await consumer.start()
    try:
        consumed = 0
        while not cell.done() and consumed < topics.commands_count:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=cell.batch)
            records = [r for batch in fetched.values() for r in batch]
            if not records:
                continue
            began = time.perf_counter()
            await transact(producer, topics, records, group)
            cell.committed(len(records), began)
            consumed += len(records)
        cell.close()
        return cell
    finally:
        await consumer.stop()
        await producer.stop()


async def raw_produce(bootstrap: str, topic: str, count: int) -> Raw:
    """`count` records (events and replies alternating) without transactions: idempotent, acks=all, linger 5 ms."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        with CpuClock() as clock:
            futures = []
            for n in range(count):
                value, headers = (EVENT, HEADERS) if n % 2 == 0 else (REPLY, None)
                futures.append(await producer.send(topic, value, key=b"k", partition=0, headers=headers))
                if len(futures) >= 5000:
                    await asyncio.gather(*futures)
                    futures.clear()
            await asyncio.gather(*futures)
        return Raw(CLIENT, count, clock.seconds, clock.cpu)
    finally:
        await producer.stop()
