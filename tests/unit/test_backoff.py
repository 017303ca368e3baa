"""The backoff that roles wait out a dependency with (infra/adapters/backoff.py), and the Kafka adapter using it."""
import asyncio
import logging

import pytest

from infra.adapters.backoff import Backoff, patiently
from infra.adapters.eventlog import LogError
from infra.adapters.eventlog.kafka import KafkaLog
from tests.support import free_port, make_settings, wait_until


def test_delays_double_from_the_first_up_to_the_cap():
    backoff = Backoff(first_s=0.5, cap_s=3.0, factor=2.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_jitter_only_shortens_a_delay_by_at_most_its_fraction():
    backoff = Backoff(first_s=1.0, cap_s=1.0, jitter=0.2)
    assert (backoff.delay(4, draw=lambda: 0.0), backoff.delay(4, draw=lambda: 1.0)) == (1.0, 0.8)


class Clock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


async def test_an_attempt_is_retried_until_it_succeeds_logging_once_per_window(caplog):
    clock, calls = Clock(), []

    async def attempt() -> str:
        calls.append(clock.now)
        if len(calls) < 8:
            raise ConnectionError("refused")
        return "connected"
    backoff = Backoff(first_s=1.0, cap_s=4.0, jitter=0.0, log_every_s=10.0)
    with caplog.at_level(logging.WARNING, "test.backoff"):
        result = await patiently("it", attempt, (ConnectionError,), backoff,
                                 logging.getLogger("test.backoff"), clock.sleep, clock.monotonic)
    assert (result, clock.slept) == ("connected", [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    # failures at 0, 1, 3, 7, 11, 15, 19 s: logged at 0 and 11 (10 s later), then the success
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for it: refused (attempt 1, 0 s so far, next in 1.0 s)",
        "waiting for it: refused (attempt 5, 11 s so far, next in 4.0 s)",
        "waited for it: done at attempt 8, after 23.0 s"]


async def test_an_error_it_is_not_told_to_retry_is_raised_at_once():
    clock = Clock()

    async def attempt() -> None:
        raise ValueError("a defect")
    with pytest.raises(ValueError, match="a defect"):
        await patiently("x", attempt, (ConnectionError,), Backoff(), logging.getLogger("t"), clock.sleep)
    assert clock.slept == []


async def test_a_log_without_patience_fails_at_once_when_no_broker_listens():
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(LogError, match="cannot create the ledger topics"):
        await KafkaLog(settings).ensure_topics()


async def test_a_log_with_patience_keeps_waiting_for_a_broker_that_does_not_listen(caplog):
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    log_ = KafkaLog(settings, Backoff(first_s=0.01, cap_s=0.05, log_every_s=0.0))
    with caplog.at_level(logging.WARNING, "runledger.eventlog"):
        waiting = asyncio.create_task(log_.ensure_topics())
        ours = lambda: [r for r in caplog.records if r.name == "runledger.eventlog"]  # noqa: E731
        await wait_until(lambda: len(ours()) >= 3 or waiting.done(), 30, "three attempts")
        assert waiting.done() is False
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert {r.getMessage().split(" (attempt")[0].split("KafkaConnectionError")[0] for r in ours()} == {
        "waiting for the broker: cannot create the ledger topics: "}


def test_quieter_lets_one_connect_error_per_address_through_per_window():
    from infra.entry.patience import AIOKAFKA_CONNECT_ERRORS, Quieter
    clock = Clock()
    quieter = Quieter(AIOKAFKA_CONNECT_ERRORS, every_s=30.0, monotonic=clock.monotonic)

    def passes(host: str, at: float, msg: str = AIOKAFKA_CONNECT_ERRORS[0]) -> bool:
        clock.now = at
        args = (host, 9092, "refused") if msg == AIOKAFKA_CONNECT_ERRORS[0] else ("refused",)
        return quieter.filter(logging.LogRecord("aiokafka", logging.ERROR, "", 0, msg, args, None))
    assert [passes("a", 0), passes("a", 10), passes("b", 10), passes("a", 31), passes("a", 31, "other %s")] == [
        True, False, True, True, True]


async def test_a_role_waiting_for_a_dependency_is_cancelled_at_once_on_stop():
    from infra.entry.patience import stoppable

    async def never(stop):
        async def refused():
            raise ConnectionError("refused")
        await patiently("it", refused, (ConnectionError,), Backoff(first_s=0.01, cap_s=0.01),
                        logging.getLogger("t"))
    stop = asyncio.Event()
    role = asyncio.create_task(stoppable(never, grace_s=3600)(stop))
    from infra.adapters.backoff import WAITING
    await wait_until(lambda: len(WAITING) > 0, 10, "the role waiting")
    stop.set()
    await asyncio.wait_for(role, 10)  # not the hour of grace
    assert (role.done(), role.cancelled()) == (True, False)


class HalfStarted:
    """A consumer whose first start gets past bootstrap and then fails, as a refused group join does (aiokafka
    then refuses a second start on the same consumer: "Did you call `start` twice?")."""
    made: list["HalfStarted"] = []

    def __init__(self):
        self.started, self.stopped, self.subscribed = False, False, None
        HalfStarted.made.append(self)

    def subscribe(self, topics, listener=None) -> None:
        self.subscribed = (tuple(topics), listener)

    async def start(self) -> None:
        assert not self.started, "Did you call `start` twice?"
        self.started = True
        if len(HalfStarted.made) == 1:
            from aiokafka.errors import KafkaError
            raise KafkaError("InvalidSessionTimeoutError")

    async def stop(self) -> None:
        self.stopped = True


async def test_a_group_consumer_whose_start_failed_past_bootstrap_is_retried_on_a_fresh_consumer():
    from infra.adapters.eventlog.kafka_group import KafkaGroupConsumer

    async def moved(_):
        pass
    HalfStarted.made.clear()
    group = KafkaGroupConsumer(HalfStarted, ["t.commands"], moved, moved, Backoff(first_s=0.0, cap_s=0.0, jitter=0.0))
    await group.start()
    first, second = HalfStarted.made
    assert (first.started, first.stopped, second.started, second.stopped) == (True, True, True, False)
    assert second.subscribed == (("t.commands",), group.listener) and group.consumer is second
