"""Stopping the confluent-kafka adapter is bounded. A writer: an open transaction that cannot be aborted in
STOP_TIMEOUT_S is left to the broker and the producer dropped without `close()` (which would wait for it with no
bound). The group consumer: a rebalance callback whose event loop has stopped is given up."""
from confluent_kafka import KafkaError, KafkaException

from infra.adapters.eventlog.confluent import STOP_TIMEOUT_S, ConfluentWriter
from tests.support import make_settings


class Producer:
    """Stands in for librdkafka's: records the calls; abort_transaction answers as told."""

    def __init__(self, abort_fails: bool):
        self.calls: list[tuple] = []
        self.abort_fails = abort_fails

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append(("abort_transaction", timeout))
        if self.abort_fails:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "abort timed out"))

    def purge(self) -> None:
        self.calls.append(("purge",))

    def close(self) -> None:
        self.calls.append(("close",))


def writer(abort_fails: bool, open_: bool) -> tuple[ConfluentWriter, Producer]:
    w = ConfluentWriter(make_settings(kafka_bootstrap="127.0.0.1:1"), "t.processor.p0")
    w.producer.close()  # the real one, never connected
    w.producer, w.open = Producer(abort_fails), open_
    return w, w.producer


async def test_an_open_transaction_that_will_not_abort_in_time_is_left_and_the_producer_dropped_unclosed():
    w, producer = writer(abort_fails=True, open_=True)
    await w.stop()
    assert (producer.calls, w.producer) == ([("abort_transaction", STOP_TIMEOUT_S), ("purge",)], None)


async def test_an_open_transaction_aborted_in_time_then_the_producer_is_closed():
    w, producer = writer(abort_fails=False, open_=True)
    await w.stop()
    assert producer.calls == [("abort_transaction", STOP_TIMEOUT_S), ("purge",), ("close",)]


async def test_with_no_transaction_open_the_producer_is_closed_at_once():
    w, producer = writer(abort_fails=False, open_=False)
    await w.stop()
    assert producer.calls == [("purge",), ("close",)]


def test_a_rebalance_callback_whose_loop_has_stopped_is_given_up_instead_of_waited_for_forever():
    # Given a consumer whose event loop is not running (a process ending), when librdkafka's thread hands it the
    # port's coroutine, then the thread goes on (the coroutine never ran) rather than keep the process alive
    import asyncio

    from infra.adapters.eventlog.confluent import ConfluentLog
    ran: list[str] = []

    async def on_revoked(tps) -> None:
        ran.append("revoked")
    consumer = ConfluentLog(make_settings(kafka_bootstrap="127.0.0.1:1")).group_consumer(
        ["t.commands"], "g", on_revoked, on_revoked)
    consumer.loop = asyncio.new_event_loop()
    try:
        consumer.on_loop(on_revoked(set()))
    finally:
        consumer.loop.close()
        consumer.consumer.close()
    assert ran == []
