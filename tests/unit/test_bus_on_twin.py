"""The API's command round trip (CommandBus) with the real command processor, both on the in-memory event log."""
import asyncio
import json
from contextlib import asynccontextmanager

import pytest

from commands.bus import CommandBus, OutcomePending
from commands.processor import utcnow
from infra.adapters.eventlog import Record, TopicPartition
from infra.adapters.eventlog.memory import MemoryLog
from tests.support import command, make_settings, unique, wait_until
from tests.unit.test_processor_on_twin import running, twin

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def processing(settings, log: MemoryLog):
    return running(settings, log, utcnow, owning=settings.partitions)


@asynccontextmanager
async def bus_on(settings, log: MemoryLog):
    bus = CommandBus(settings, log)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


def on_topic(log: MemoryLog, topic: str) -> list[Record]:
    return [r for p in range(log.partitions) for r in log.visible(TopicPartition(topic, p), 0)]


def run_requested(tenant: str) -> dict:
    return command(tenant, {"type": "RequestRun", "agent_id": "a"})


async def test_a_submitted_command_is_produced_keyed_with_its_trace_and_its_outcome_returned():
    settings = make_settings(partitions=2)
    log = twin(settings)
    sent = {**run_requested(unique("t")), "traceparent": TRACEPARENT}
    async with processing(settings, log), bus_on(settings, log) as bus:
        reply = await bus.submit(sent)
        assert bus.pending == {}
    assert (reply["command_id"], reply["status"]) == (sent["command_id"], "accepted")
    [produced] = on_topic(log, settings.commands_topic)
    assert (json.loads(produced.value), produced.key, produced.headers) == \
        (sent, sent["tenant_id"].encode(), (("traceparent", TRACEPARENT.encode()),))


async def test_a_reply_that_arrives_before_the_wait_starts_is_not_missed():
    # Given a send that returns only once the processor's reply is on the log and read by the bus
    settings = make_settings(partitions=1)
    log = twin(settings)
    sent = run_requested(unique("t"))
    registered: list[asyncio.Future | None] = []

    async def reply_before_the_wait(record: Record) -> None:
        if record.topic == settings.commands_topic:
            registered.append(bus.pending.get(sent["command_id"]))
            assert registered[0] is not None, "the future is registered before the command is produced"
            await wait_until(registered[0].done, 10, "the reply to resolve the future")
    log.after_send = reply_before_the_wait
    async with processing(settings, log), bus_on(settings, log) as bus:
        # When the command is submitted, Then the outcome that came before the wait is returned
        reply = await bus.submit(sent)
    assert (reply["command_id"], reply["status"], reply is registered[0].result()) == \
        (sent["command_id"], "accepted", True)


async def test_no_outcome_in_time_is_outcome_pending():
    settings = make_settings(partitions=1, command_timeout_s=0.2)
    log = twin(settings)
    sent = run_requested(unique("t"))
    async with bus_on(settings, log) as bus:  # no processor: nobody replies
        with pytest.raises(OutcomePending, match=sent["command_id"]):
            await bus.submit(sent)
        assert bus.pending == {}
    assert [json.loads(r.value)["command_id"] for r in on_topic(log, settings.commands_topic)] == \
        [sent["command_id"]]


async def test_a_reply_of_an_aborted_transaction_is_never_delivered():
    settings = make_settings(partitions=1)
    log = twin(settings)
    sent = run_requested(unique("t"))
    replies = TopicPartition(settings.replies_topic, 0)
    async with bus_on(settings, log) as bus:
        submitting = asyncio.create_task(bus.submit(sent))
        await wait_until(lambda: on_topic(log, settings.commands_topic), 10, "the command on the log")
        # Given a forged reply to the command, in a transaction that aborts
        forger = log.transactional_writer("forger")
        await forger.start()
        with pytest.raises(RuntimeError):
            async with forger.transaction():
                forged = {"command_id": sent["command_id"], "status": "forged"}
                await forger.send(settings.replies_topic, json.dumps(forged).encode(), b"k", 0)
                raise RuntimeError("abort")
        await wait_until(lambda: bus.replies.positions[replies] == 1, 10, "the tail to pass the aborted reply")
        assert not submitting.done()
        # When the processor then decides the command, Then its committed reply is the outcome
        async with processing(settings, log):
            reply = await asyncio.wait_for(submitting, 10)
    assert (reply["command_id"], reply["status"]) == (sent["command_id"], "accepted")
