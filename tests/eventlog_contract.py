"""One contract for every event-log adapter (Kafka through aiokafka and through confluent-kafka, the in-memory twin).

Each case takes `ctx`: a started EventLog with the three ledger topics, their names, and
`await produce(topic, key, value, partition)`, which appends a committed record outside any transaction
(on the key's partition, Kafka's default partitioner's, when partition is None).
"""
import asyncio
from dataclasses import dataclass
from typing import Callable

import pytest

from infra.adapters.eventlog import Delivered, EventLog, Fenced, NotAssigned, TopicPartition
from infra.adapters.kafka import partition_for
from tests.support import wait_until


@dataclass
class Ctx:
    log: EventLog
    commands: str
    events: str
    produce: Callable
    partitions: int
    unique: Callable[[str], str]


async def read_all(ctx: Ctx, tp: TopicPartition) -> list[bytes]:
    reader = ctx.log.reader()
    await reader.start()
    try:
        return [r.value async for r in reader.read(tp)]
    finally:
        await reader.stop()


async def read_when(ctx: Ctx, tp: TopicPartition, expected: list[bytes], timeout_s: float = 30) -> list[bytes]:
    """Read the partition until it holds `expected` or the deadline passes; return the last read.

    Kafka writes a transaction's commit marker after the commit returns, so the last stable offset
    can trail it for a moment; the twin is at once.
    """
    last: list[bytes] = []

    async def arrived() -> bool:
        nonlocal last
        last = await read_all(ctx, tp)
        return last == expected
    try:
        await wait_until(arrived, timeout_s, f"{expected} on {tp}")
    except AssertionError:
        pass  # the caller's assertion shows what was read instead
    return last


async def committed_transaction(writer, topic: str, values: list[bytes], partition: int = 0) -> None:
    async with writer.transaction():
        sends = [await writer.send(topic, v, b"k", partition) for v in values]
        await asyncio.gather(*sends)


async def case_committed_records_are_read_in_order_and_aborted_ones_never(ctx: Ctx):
    writer = ctx.log.transactional_writer(ctx.unique("tx"))
    await writer.start()
    await committed_transaction(writer, ctx.events, [b"1", b"2"])
    with pytest.raises(RuntimeError):
        async with writer.transaction():
            await writer.send(ctx.events, b"aborted", b"k", 0)
            raise RuntimeError("the caller gives up")
    await committed_transaction(writer, ctx.events, [b"3"])
    await writer.stop()
    assert await read_when(ctx, TopicPartition(ctx.events, 0), [b"1", b"2", b"3"]) == [b"1", b"2", b"3"]


async def case_a_new_writer_fences_the_old_and_aborts_its_open_transaction(ctx: Ctx):
    tid = ctx.unique("tx")
    old = ctx.log.transactional_writer(tid)
    await old.start()
    with pytest.raises(Fenced):
        async with old.transaction():
            await asyncio.gather(await old.send(ctx.events, b"zombie", b"k", 0))
            new = ctx.log.transactional_writer(tid)
            await new.start()
    await committed_transaction(new, ctx.events, [b"owner"])
    await new.stop()
    await old.stop()
    assert await read_when(ctx, TopicPartition(ctx.events, 0), [b"owner"]) == [b"owner"]


async def case_offsets_sent_with_a_transaction_commit_with_it_and_only_then(ctx: Ctx):
    group, tp = ctx.unique("group"), TopicPartition(ctx.commands, 0)
    for value in (b"a", b"b", b"c"):
        await ctx.produce(ctx.commands, b"k", value, 0)
    assigned = asyncio.Event()

    async def on_assigned(tps):
        assigned.set()
    consumer = ctx.log.group_consumer([ctx.commands], group, on_assigned, noop)  # whose group the offsets are
    writer = ctx.log.transactional_writer(ctx.unique("tx"))
    await writer.start()
    with pytest.raises(RuntimeError):
        async with writer.transaction():
            await writer.send_offsets({tp: 1}, consumer)
            raise RuntimeError("abort")
    async with writer.transaction():
        await writer.send_offsets({tp: 2}, consumer)
    await writer.stop()
    await consumer.start()
    try:
        await wait_until(lambda: polled_into(consumer, tp), 30, "the assignment")  # read again from the seek below
        # Kafka materialises transactional offsets when the commit marker lands, a moment after the commit
        committed = await wait_until(lambda: committed_is(consumer, tp, 2), 30, "the committed offset")
        consumer.pause(*(consumer.assignment() - {tp}))
        consumer.seek(tp, committed)
        records = await fetch_until(consumer, 1)
        assert (committed, [r.value for r in records[tp]]) == (2, [b"c"])
    finally:
        await consumer.stop()


async def case_a_group_member_gets_every_partition_and_pause_seek_and_not_assigned_behave(ctx: Ctx):
    for p in range(ctx.partitions):
        await ctx.produce(ctx.commands, b"k", f"p{p}".encode(), p)
    moves: list[tuple[str, set]] = []

    async def on_assigned(tps):
        moves.append(("assigned", tps))

    async def on_revoked(tps):
        moves.append(("revoked", tps))
    consumer = ctx.log.group_consumer([ctx.commands], ctx.unique("group"), on_assigned, on_revoked)
    await consumer.start()
    try:
        everything = {TopicPartition(ctx.commands, p) for p in range(ctx.partitions)}
        first = await fetch_until(consumer, ctx.partitions)
        assert (consumer.assignment(), ("assigned", everything) in moves) == (everything, True)
        assert {tp: [r.value for r in rs] for tp, rs in first.items()} == {tp: [f"p{tp.partition}".encode()]
                                                                           for tp in everything}
        tp0 = TopicPartition(ctx.commands, 0)
        consumer.pause(*(everything - {tp0}))
        consumer.seek(tp0, 0)
        again = await fetch_until(consumer, 1)
        assert ({tp: [r.value for r in rs] for tp, rs in again.items()}, consumer.paused()) == \
            ({tp0: [b"p0"]}, everything - {tp0})
        with pytest.raises(NotAssigned):
            consumer.seek(TopicPartition(ctx.commands, ctx.partitions + 5), 0)
    finally:
        await consumer.stop()


async def case_records_after_an_open_transaction_wait_until_it_ends(ctx: Ctx):
    writer = ctx.log.transactional_writer(ctx.unique("tx"))
    await writer.start()
    tp = TopicPartition(ctx.events, 1)
    reader = ctx.log.reader()
    await reader.start()
    try:
        async with writer.transaction():
            await asyncio.gather(await writer.send(ctx.events, b"open", b"k", 1))
            await ctx.produce(ctx.events, b"k", b"after", 1)
            assert (await reader.end_offsets([tp]))[tp] == 0
        assert await read_when(ctx, tp, [b"open", b"after"]) == [b"open", b"after"]
    finally:
        await reader.stop()
        await writer.stop()


async def case_a_produced_record_is_committed_at_once_on_its_keys_partition(ctx: Ctx):
    producer = ctx.log.producer()
    await producer.start()
    try:
        first = await (await producer.send(ctx.events, b"one", b"tenant-x", [("h", b"1")]))
        second = await (await producer.send(ctx.events, b"two", b"tenant-x"))
    finally:
        await producer.stop()
    tp = TopicPartition(ctx.events, partition_for("tenant-x", ctx.partitions))
    assert (first, second) == (Delivered(*tp, first.offset), Delivered(*tp, first.offset + 1))
    reader = ctx.log.reader()
    await reader.start()
    try:
        assert (await reader.end_offsets([tp]))[tp] == second.offset + 1
        assert [(r.offset, r.key, r.value, r.headers) async for r in reader.read(tp)] == \
            [(first.offset, b"tenant-x", b"one", (("h", b"1"),)), (second.offset, b"tenant-x", b"two", ())]
    finally:
        await reader.stop()


async def case_a_tail_yields_what_commits_after_it_started_and_never_an_aborted_transaction(ctx: Ctx):
    await ctx.produce(ctx.commands, b"k", b"before")  # on the key's partition, as the producer's below
    tail = ctx.log.tail(ctx.commands)
    await tail.start()
    producer, writer = ctx.log.producer(), ctx.log.transactional_writer(ctx.unique("tx"))
    await producer.start()
    await writer.start()
    try:
        after = await (await producer.send(ctx.commands, b"after", b"k"))
        with pytest.raises(RuntimeError):
            async with writer.transaction():
                await asyncio.gather(await writer.send(ctx.commands, b"aborted", b"k", after.partition))
                raise RuntimeError("abort")
        await committed_transaction(writer, ctx.commands, [b"committed"], after.partition)
        seen = await asyncio.wait_for(tail_until(tail, b"committed"), 30)
        assert seen == [(after.partition, b"after"), (after.partition, b"committed")]
    finally:
        await writer.stop()
        await producer.stop()
        await tail.stop()


async def tail_until(tail, last: bytes) -> list[tuple[int, bytes]]:
    seen = []
    async for record in tail.records():
        seen.append((record.partition, record.value))
        if record.value == last:
            return seen


async def polled_into(consumer, tp: TopicPartition) -> bool:
    """Whether tp is assigned, after a poll: librdkafka moves partitions only inside getmany, aiokafka at any await."""
    await consumer.getmany(100, 100)
    return tp in consumer.assignment()


async def committed_is(consumer, tp: TopicPartition, offset: int) -> int | None:
    return offset if await consumer.committed(tp) == offset else None


async def noop(_):
    return None


async def fetch_until(consumer, count: int, timeout_s: float = 30) -> dict:
    """getmany until `count` records arrived in all, or fail after the deadline."""
    got: dict = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while sum(map(len, got.values())) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {got} after {timeout_s}s"
        for tp, records in (await consumer.getmany(500, 100)).items():
            got.setdefault(tp, []).extend(records)
    return got


CASES = [case_committed_records_are_read_in_order_and_aborted_ones_never,
         case_a_new_writer_fences_the_old_and_aborts_its_open_transaction,
         case_offsets_sent_with_a_transaction_commit_with_it_and_only_then,
         case_a_group_member_gets_every_partition_and_pause_seek_and_not_assigned_behave,
         case_records_after_an_open_transaction_wait_until_it_ends,
         case_a_produced_record_is_committed_at_once_on_its_keys_partition,
         case_a_tail_yields_what_commits_after_it_started_and_never_an_aborted_transaction]
