"""The API's side of the command round trip: produce to `ledger.commands`, await `ledger.replies`.

Every API process tails all reply partitions from their end (read_committed, so only replies
whose transaction committed are seen) and resolves the future registered for each command id
before the command was produced, so a reply can never arrive unseen. Both go through the
event-log port (infra/adapters/eventlog): a plain producer and a tail.

The whole round trip is bounded by RUNLEDGER_COMMAND_TIMEOUT_S, the produce included, and the
log's confirmation of a command by RUNLEDGER_DELIVERY_TIMEOUT_S within it. Three answers are not
an outcome, and each says what is true:
- LogUnavailable(sent=False): the bus is not connected yet, or the producer could not deliver and
  the broker probe still says the broker is down; nothing was produced.
- LogUnavailable(sent=True): produced, but the log did not confirm it in time. The idempotent
  producer goes on retrying, so it may still be recorded once the broker is back: only a retry
  with the same Idempotency-Key is exact (the processor records one outcome per key).
- OutcomePending: the log holds the command; no outcome arrived in time. It will be decided.
"""
import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from opentelemetry.trace import Tracer

from infra.adapters import tracing
from infra.adapters.eventlog import Delivered, EventLog, LogError, Producer, Tail
from infra.adapters.meters import CommandMeters, command_meters, command_type
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.bus")
BrokerDown = Callable[[], Awaitable[str | None]]  # why the broker is down now, or None (the health probe's answer)


class OutcomePending(Exception):
    """The log holds the command, and no outcome arrived in time; it may still be decided."""


class LogUnavailable(Exception):
    """The log did not take the command; `sent`: it was produced (and may still be recorded)."""

    def __init__(self, why: str, sent: bool):
        super().__init__(why)
        self.why, self.sent = why, sent


UNAVAILABLE = "log_unavailable"  # the command.duration outcome of a command the log did not take (503)


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def settled(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a delivery given up on may fail later, unheard


class CommandBus:
    def __init__(self, settings: Settings, log_: EventLog, tracer: Tracer | None = None,
                 meters: CommandMeters | None = None, broker_down: BrokerDown | None = None):
        """`broker_down`: asked only while the bus is not connected or its last delivery failed."""
        self.settings = settings
        self.log = log_
        self.tracer = tracer or tracing.tracer()
        self.meters = meters or command_meters()  # runledger.command.duration, from produce to reply
        self.broker_down = broker_down
        self.pending: dict[str, asyncio.Future] = {}
        self.task: asyncio.Task | None = None
        self.producer: Producer | None = None
        self.replies: Tail | None = None
        self.connected = asyncio.Event()
        self.unconnected: str | None = None  # why connecting ended without success (a log without patience)
        self.failing_since: float | None = None  # the last delivery failed; cleared by the next that succeeds

    async def start(self) -> None:
        """Connect and tail the replies in the background: with a broker down, the API starts all the same."""
        self.task = asyncio.create_task(self.run(), name="reply-listener")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.replies:
            await self.replies.stop()
        if self.producer:
            await self.producer.stop()

    async def run(self) -> None:
        try:
            await self.connect()
        except LogError as error:
            self.unconnected = repr(error)
            log.error("the command bus cannot connect: %r", error)
            return
        self.connected.set()
        await self.listen()

    async def connect(self) -> None:
        await self.log.ensure_topics()
        self.producer = self.log.producer()
        await self.producer.start()
        replies = self.log.tail(self.settings.replies_topic)
        await replies.start()  # fixes the start: every reply committed from here on is seen
        self.replies = replies

    async def listen(self) -> None:
        while True:
            try:
                async for record in self.replies.records():
                    self.resolve(record.value)
            except LogError as error:  # the tail goes on from where it was: no reply is skipped
                log.warning("reading replies failed: %r; reading on", error)
                await asyncio.sleep(0.5)

    def resolve(self, value: bytes | None) -> None:
        try:
            reply = json.loads(value)
        except (TypeError, ValueError):
            log.error("skipping an unreadable reply")
            return
        command_id = reply.get("command_id") if isinstance(reply, dict) else None
        future = self.pending.pop(command_id, None) if isinstance(command_id, str) else None
        if future is not None and not future.done():
            future.set_result(reply)

    async def admit(self, deadline: float) -> None:
        """Raise LogUnavailable(sent=False) when the bus knows the log cannot take a command now."""
        if self.connected.is_set() and self.failing_since is None:
            return
        down = await self.broker_down() if self.broker_down is not None else None
        if self.connected.is_set():
            if down is not None:
                raise LogUnavailable(f"the broker is down ({down})", sent=False)
            return
        if down is not None or self.unconnected is not None or self.task is None:
            raise LogUnavailable(f"not connected to the broker ({down or self.unconnected or 'not started'})",
                                 sent=False)
        try:
            await asyncio.wait_for(self.connected.wait(), left(deadline))
        except asyncio.TimeoutError:
            raise LogUnavailable("not connected to the broker yet", sent=False) from None

    async def submit(self, command: dict[str, Any]) -> dict[str, Any]:
        """Produce a command envelope and return its outcome; raise LogUnavailable or OutcomePending.

        The command's `traceparent` becomes that of its `send` span (infra/adapters/tracing.py)."""
        started, deadline = time.perf_counter(), time.monotonic() + self.settings.command_timeout_s
        future = asyncio.get_running_loop().create_future()
        self.pending[command["command_id"]] = future  # before producing: the reply may come before the wait
        try:
            await self.admit(deadline)
            await self.produce(command, deadline)
            reply = await asyncio.wait_for(future, left(deadline))
        except LogUnavailable:
            self.meters.answered(command, None, started, UNAVAILABLE)
            raise
        except asyncio.TimeoutError:
            self.meters.answered(command, None, started)
            log.warning("command %s (%s) had no outcome within %ss; it may still be decided", command["command_id"],
                        command_type(command), self.settings.command_timeout_s)
            raise OutcomePending(command["command_id"]) from None
        else:
            self.meters.answered(command, reply, started)
            return reply
        finally:
            self.pending.pop(command["command_id"], None)

    async def submit_many(self, commands: list[dict[str, Any]]) -> list[dict[str, Any] | LogUnavailable | None]:
        """Produce command envelopes in their order and return their outcomes in that order, all awaited
        together: None for each the log holds that had no outcome in time (per command, the OutcomePending),
        LogUnavailable for each the log did not confirm. LogUnavailable is raised when it confirmed none."""
        started, deadline = time.perf_counter(), time.monotonic() + self.settings.command_timeout_s
        loop = asyncio.get_running_loop()
        futures = {command["command_id"]: loop.create_future() for command in commands}
        self.pending.update(futures)  # before producing, as in submit
        try:
            try:
                if commands:
                    await self.admit(deadline)
                confirmed = await self.produce_many(commands, deadline)
            except LogUnavailable:
                for command in commands:
                    self.meters.answered(command, None, started, UNAVAILABLE)
                raise
            awaited = [future for future, ok in zip(futures.values(), confirmed) if ok]
            if awaited:
                await asyncio.wait(awaited, timeout=left(deadline))
            replies = [(future.result() if future.done() else None) if ok else LogUnavailable(self.unconfirmed(), True)
                       for future, ok in zip(futures.values(), confirmed)]
            for command, reply in zip(commands, replies):
                self.meters.answered(command, reply if isinstance(reply, dict) else None, started,
                                     UNAVAILABLE if isinstance(reply, LogUnavailable) else None)
            if None in replies:
                log.warning("%s of %s commands had no outcome within %ss; they may still be decided",
                            replies.count(None), len(replies), self.settings.command_timeout_s)
            return replies
        finally:
            for command_id in futures:
                self.pending.pop(command_id, None)

    def delivery_bound(self, deadline: float) -> float:
        return min(self.settings.delivery_timeout_s, left(deadline))

    def unconfirmed(self) -> str:
        return f"the log did not confirm it within {self.settings.delivery_timeout_s:g}s (RUNLEDGER_DELIVERY_TIMEOUT_S)"

    async def produce_many(self, commands: list[dict[str, Any]], deadline: float) -> list[bool]:
        """Queue every command on the one producer before awaiting any delivery: a tenant's commands go to
        its one partition in the order given (the producer is idempotent, one request in flight per partition).
        Return, per command, whether the log confirmed it within the delivery bound.

        One `send` span for the batch (the conventions' batch send) is every command's creation context."""
        topic = self.settings.commands_topic
        with tracing.producing_batch(self.tracer, topic, commands) as (span, headers):
            deliveries = await self.queued(commands, headers, deadline)
            if not deliveries:
                return []
            await asyncio.wait(deliveries, timeout=self.delivery_bound(deadline))
            confirmed = [d.done() and not d.cancelled() and d.exception() is None for d in deliveries]
            self.delivered(all(confirmed), deliveries)
            if not any(confirmed):
                raise LogUnavailable(self.unconfirmed(), sent=True)
            last = [d.result() for d, ok in zip(deliveries, confirmed) if ok][-1]
            tracing.delivered(span, last.partition, last.offset)
            return confirmed

    async def produce(self, command: dict[str, Any], deadline: float) -> None:
        topic = self.settings.commands_topic
        with tracing.producing(self.tracer, topic, command) as (span, headers):
            [delivery] = await self.queued([command], headers, deadline)
            await asyncio.wait([delivery], timeout=self.delivery_bound(deadline))
            confirmed = delivery.done() and not delivery.cancelled() and delivery.exception() is None
            self.delivered(confirmed, [delivery])
            if not confirmed:
                raise LogUnavailable(self.unconfirmed(), sent=True)
            where: Delivered = delivery.result()
            tracing.delivered(span, where.partition, where.offset)

    async def queued(self, commands: list[dict[str, Any]], headers, deadline: float) -> list[asyncio.Future]:
        """Hand the commands to the producer (bounded: it may wait for metadata or room); their deliveries."""
        topic = self.settings.commands_topic

        async def queue() -> list[asyncio.Future]:
            sent = [await self.producer.send(topic, dumps(c), c["tenant_id"].encode(), headers) for c in commands]
            return [asyncio.ensure_future(s) for s in sent]
        try:
            return await asyncio.wait_for(queue(), self.delivery_bound(deadline))
        except (asyncio.TimeoutError, LogError) as error:
            self.delivered(False, [])
            raise LogUnavailable(self.unconfirmed() if isinstance(error, asyncio.TimeoutError) else repr(error),
                                 sent=True) from None

    def delivered(self, confirmed: bool, deliveries: list[asyncio.Future]) -> None:
        """Remember whether the log takes commands; deliveries given up on stay with the producer, unheard."""
        for delivery in deliveries:
            if not delivery.done():
                delivery.add_done_callback(settled)
            elif not delivery.cancelled():
                delivery.exception()
        if confirmed:
            if self.failing_since is not None:
                log.warning("the log confirms commands again, after %.1f s", time.monotonic() - self.failing_since)
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("the log did not confirm a command: answering 503 log_unavailable while the broker "
                        "probe says it is down")


def left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
