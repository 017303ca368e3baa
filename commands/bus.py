"""The API's side of the command round trip: produce to `ledger.commands`, await `ledger.replies`.

Every API process tails all reply partitions from their end (read_committed, so only replies
whose transaction committed are seen) and resolves the future registered for each command id
before the command was produced, so a reply can never arrive unseen. Both go through the
event-log port (infra/adapters/eventlog): a plain producer and a tail.
"""
import asyncio
import json
import logging
import time
from typing import Any

from opentelemetry.trace import Tracer

from infra.adapters import tracing
from infra.adapters.eventlog import EventLog, LogError, Producer, Tail
from infra.adapters.meters import CommandMeters, command_meters, command_type
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.bus")


class OutcomePending(Exception):
    """No outcome arrived in time; the command may still be decided."""


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class CommandBus:
    def __init__(self, settings: Settings, log_: EventLog, tracer: Tracer | None = None,
                 meters: CommandMeters | None = None):
        self.settings = settings
        self.log = log_
        self.tracer = tracer or tracing.tracer()
        self.meters = meters or command_meters()  # runledger.command.duration, from produce to reply
        self.pending: dict[str, asyncio.Future] = {}
        self.task: asyncio.Task | None = None
        self.producer: Producer | None = None
        self.replies: Tail | None = None

    async def start(self) -> None:
        await self.log.ensure_topics()
        self.producer = self.log.producer()
        self.replies = self.log.tail(self.settings.replies_topic)
        await self.producer.start()
        await self.replies.start()  # fixes the start: every reply committed from here on is seen
        self.task = asyncio.create_task(self.listen(), name="reply-listener")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.replies:
            await self.replies.stop()
        if self.producer:
            await self.producer.stop()

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

    async def submit(self, command: dict[str, Any]) -> dict[str, Any]:
        """Produce a command envelope and return its outcome, or raise OutcomePending.

        The command's `traceparent` becomes that of its `send` span (infra/adapters/tracing.py)."""
        started = time.perf_counter()
        future = asyncio.get_running_loop().create_future()
        self.pending[command["command_id"]] = future  # before producing: the reply may come before the wait
        try:
            await self.produce(command)
            reply = await asyncio.wait_for(future, self.settings.command_timeout_s)
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

    async def submit_many(self, commands: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Produce command envelopes in their order and return their outcomes in that order, all awaited
        together; None for each that had no outcome in time (the batch's OutcomePending, per command)."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        futures = {command["command_id"]: loop.create_future() for command in commands}
        self.pending.update(futures)  # before producing, as in submit
        try:
            await self.produce_many(commands)
            if futures:
                await asyncio.wait(futures.values(), timeout=self.settings.command_timeout_s)
            replies = [future.result() if future.done() else None for future in futures.values()]
            for command, reply in zip(commands, replies):
                self.meters.answered(command, reply, started)
            if None in replies:
                log.warning("%s of %s commands had no outcome within %ss; they may still be decided",
                            replies.count(None), len(replies), self.settings.command_timeout_s)
            return replies
        finally:
            for command_id in futures:
                self.pending.pop(command_id, None)

    async def produce_many(self, commands: list[dict[str, Any]]) -> None:
        """Queue every command on the one producer before awaiting any delivery: a tenant's commands go to
        its one partition in the order given (the producer is idempotent, one request in flight per partition).

        One `send` span for the batch (the conventions' batch send) is every command's creation context."""
        topic = self.settings.commands_topic
        with tracing.producing_batch(self.tracer, topic, commands) as (span, headers):
            queued = [await self.producer.send(topic, dumps(c), c["tenant_id"].encode(), headers) for c in commands]
            if queued:
                last = await asyncio.gather(*queued)
                tracing.delivered(span, last[-1].partition, last[-1].offset)

    async def produce(self, command: dict[str, Any]) -> None:
        topic = self.settings.commands_topic
        with tracing.producing(self.tracer, topic, command) as (span, headers):
            where = await (await self.producer.send(topic, dumps(command), command["tenant_id"].encode(), headers))
            tracing.delivered(span, where.partition, where.offset)
