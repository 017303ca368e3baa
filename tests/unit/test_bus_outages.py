"""The command path while the log cannot take commands: bounded, 503 log_unavailable, and what it tells is true.

On the in-memory log, with a producer that holds the records of unreachable keys unconfirmed (a broker
gone while they sit in the producer's buffer), and the health probe's answer given by the test.
"""
import asyncio
import json

import httpx
import pytest

from commands.api import routes_commands
from commands.bus import CommandBus, LogUnavailable, OutcomePending
from commands.processor import utcnow
from infra.adapters.eventlog import TopicPartition
from infra.adapters.eventlog.memory import MemoryLog, MemoryProducer
from infra.adapters.http.app import create_app
from infra.adapters.http.errors import status_of_code
from infra.adapters.meters import CommandMeters
from tests.support import command, make_settings, token, unique
from tests.unit.test_metrics_sources import Points, labels
from tests.unit.test_processor_on_twin import running


class HeldProducer(MemoryProducer):
    async def send(self, topic, value, key, headers=None):
        if key in self.log.unreachable:
            self.log.held.append(value)
            return asyncio.get_running_loop().create_future()  # never confirmed
        return await super().send(topic, value, key, headers)


class OutageLog(MemoryLog):
    """A twin whose producer never confirms the records of `unreachable` keys; `connects` gates connecting."""

    def __init__(self, *args):
        super().__init__(*args)
        self.unreachable: set[bytes] = set()
        self.held: list[bytes] = []
        self.connects = asyncio.Event()
        self.connects.set()

    def producer(self):
        return HeldProducer(self)

    async def ensure_topics(self) -> None:
        await self.connects.wait()  # a log with patience waits here while the broker is down
        await super().ensure_topics()


class Probe:
    def __init__(self):
        self.down: str | None = None
        self.asked = 0

    async def __call__(self) -> str | None:
        self.asked += 1
        return self.down


def outage_twin(**overrides):
    settings = make_settings(**{"partitions": 2, "delivery_timeout_s": 0.2, "command_timeout_s": 5.0, **overrides})
    return settings, OutageLog([settings.commands_topic, settings.events_topic, settings.replies_topic], 2)


def commands_on(log: MemoryLog, settings) -> list[str]:
    return [json.loads(r.value)["command_id"] for p in range(2)
            for r in log.visible(TopicPartition(settings.commands_topic, p), 0)]


def run_requested(tenant: str, key: str | None = None) -> dict:
    return command(tenant, {"type": "RequestRun", "agent_id": "a"}, key=key)


async def started(bus: CommandBus) -> CommandBus:
    await bus.start()
    await asyncio.wait_for(bus.connected.wait(), 5)
    return bus


async def test_a_command_the_log_does_not_confirm_is_unavailable_as_sent_then_refused_unsent_while_down():
    settings, log = outage_twin()
    probe = Probe()
    tenant = unique("t")
    log.unreachable.add(tenant.encode())
    bus = await started(CommandBus(settings, log, broker_down=probe))
    try:
        # When the broker goes away with the command in the producer's buffer
        with pytest.raises(LogUnavailable) as first:
            await bus.submit(run_requested(tenant, "k1"))
        assert (first.value.sent, probe.asked, len(log.held), bus.pending) == (True, 0, 1, {})
        # Then, while the probe says the broker is down, nothing more is produced
        probe.down = "no answer within 1 s (the probe's timeout)"
        with pytest.raises(LogUnavailable) as second:
            await bus.submit(run_requested(tenant, "k2"))
        assert (second.value.sent, second.value.why, len(log.held), probe.asked) == (
            False, "the broker is down (no answer within 1 s (the probe's timeout))", 1, 1)
    finally:
        await bus.stop()


async def test_once_the_probe_says_the_broker_is_back_commands_are_produced_and_decided_again():
    settings, log = outage_twin()
    probe = Probe()
    tenant = unique("t")
    log.unreachable.add(tenant.encode())
    async with running(settings, log, utcnow, owning=2):
        bus = await started(CommandBus(settings, log, broker_down=probe))
        try:
            with pytest.raises(LogUnavailable):
                await bus.submit(run_requested(tenant, "k1"))
            log.unreachable.clear()  # the broker is back; the probe says so
            again = run_requested(tenant, "k1")
            reply = await bus.submit(again)
            asked = probe.asked
            await bus.submit(run_requested(tenant, "k3"))  # confirmed: the probe is no longer asked
        finally:
            await bus.stop()
    assert (reply["status"], reply["command_id"], bus.failing_since, probe.asked, asked) == (
        "accepted", again["command_id"], None, 1, 1)


async def test_a_bus_not_yet_connected_refuses_at_once_while_the_broker_is_down_and_waits_while_it_is_up():
    settings, log = outage_twin(command_timeout_s=1.0)
    probe = Probe()
    log.connects.clear()  # the bus is waiting for the broker
    probe.down = "Connection refused"
    bus = CommandBus(settings, log, broker_down=probe)
    await bus.start()
    try:
        with pytest.raises(LogUnavailable) as refused:
            await bus.submit(run_requested(unique("t")))
        assert (refused.value.sent, refused.value.why) == (False, "not connected to the broker (Connection refused)")
        probe.down = None  # the broker answers; the bus connects while a command waits for it
        sent = run_requested(unique("t"))
        submitting = asyncio.create_task(bus.submit(sent))
        log.connects.set()
        with pytest.raises(OutcomePending):  # no processor here: produced, and no outcome
            await submitting
        assert commands_on(log, settings) == [sent["command_id"]]
    finally:
        await bus.stop()


async def test_a_batch_answers_per_command_what_the_log_confirmed_and_raises_when_it_confirmed_none():
    settings, log = outage_twin()
    reachable, unreachable = unique("a"), unique("b")
    log.unreachable.add(unreachable.encode())
    async with running(settings, log, utcnow, owning=2):
        bus = await started(CommandBus(settings, log, broker_down=Probe()))
        try:
            replies = await bus.submit_many([run_requested(reachable, "a1"), run_requested(unreachable, "b1")])
            with pytest.raises(LogUnavailable) as none:
                await bus.submit_many([run_requested(unreachable, "b2")])
        finally:
            await bus.stop()
    assert (replies[0]["status"], type(replies[1]), replies[1].sent, none.value.sent) == (
        "accepted", LogUnavailable, True, True)


async def test_every_command_the_log_did_not_take_is_timed_as_log_unavailable():
    settings, log = outage_twin()
    points, probe = Points(), Probe()
    reachable, unreachable = unique("a"), unique("b")
    log.unreachable.add(unreachable.encode())
    async with running(settings, log, utcnow, owning=2):
        bus = await started(CommandBus(settings, log, meters=CommandMeters(points.meter), broker_down=probe))
        try:
            with pytest.raises(LogUnavailable):  # produced, unconfirmed
                await bus.submit(run_requested(unreachable, "k1"))
            await bus.submit_many([run_requested(reachable, "a1"), run_requested(unreachable, "b1")])
            probe.down = "Connection refused"
            with pytest.raises(LogUnavailable):  # refused before producing
                await bus.submit(run_requested(reachable, "k2"))
            with pytest.raises(LogUnavailable):
                await bus.submit_many([run_requested(reachable, "a2"), run_requested(reachable, "a3")])
        finally:
            await bus.stop()
    counts = {attributes: count for attributes, (count, _) in points.named("runledger.command.duration").items()}
    assert counts == {labels(command_type="RequestRun", outcome="log_unavailable"): 5,
                      labels(command_type="RequestRun", outcome="accepted"): 1}


class Refusing:
    """A bus whose log cannot take commands."""

    def __init__(self, sent: bool):
        self.sent = sent

    async def submit(self, command):
        raise LogUnavailable("the broker is down (Connection refused)", self.sent)

    async def submit_many(self, commands):
        raise LogUnavailable("the broker is down (Connection refused)", self.sent)


@pytest.mark.parametrize("sent", [False, True])
async def test_the_api_answers_503_log_unavailable_with_retry_after_and_what_became_of_the_command(sent):
    settings = make_settings(unavailable_retry_after_s=3)
    app = create_app(settings, [routes_commands.router], {"bus": Refusing(sent)})
    headers = {"Authorization": f"Bearer {token(unique('t'))}", "Idempotency-Key": "k-1"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://twin") as http:
        one = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "a"}, headers=headers)
        batch = await http.post("/v1/commands/batch", json=[{"type": "RequestRun", "agent_id": "a",
                                                             "idempotency_key": "b-1"}],
                                headers={"Authorization": headers["Authorization"]})
    for response in (one, batch):
        body = response.json()
        assert (response.status_code, response.headers["retry-after"], body["code"], body["details"]) == (
            503, "3", "log_unavailable", {"sent": sent})
    reason = one.json()["reason"]
    if sent:
        assert reason == ("the event log did not take it (the broker is down (Connection refused)): not accepted, "
                          "but it may still be recorded once the broker is back, so retry after 3s with the same "
                          "Idempotency-Key: the processor records one outcome per key, so the retry returns that "
                          "outcome and never records it twice")
    else:
        assert reason == ("the event log cannot take commands now (the broker is down (Connection refused)); "
                          "nothing was recorded: retry after 3s with the same Idempotency-Key")
    assert "same idempotency_key for each command" in batch.json()["reason"]


def test_log_unavailable_is_a_503_in_the_one_table():
    assert status_of_code("log_unavailable") == 503


async def test_a_503_for_a_produced_command_without_a_key_says_a_retry_may_record_it_twice():
    app = create_app(make_settings(), [routes_commands.router], {"bus": Refusing(sent=True)})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://twin") as http:
        response = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "a"},
                                   headers={"Authorization": f"Bearer {token(unique('t'))}"})
    assert (response.status_code, response.json()["reason"].split("; ")[-1]) == (
        503, "this request had no Idempotency-Key, so a retry may record it twice")
