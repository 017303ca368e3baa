"""The API's side of the command round trip: produce to `ledger.commands`, await `ledger.replies`.

Every API process tails all reply partitions from their end (read_committed, so only replies
whose transaction committed are seen) and resolves the future registered for each command id
before the command was produced, so a reply can never arrive unseen. Both go through the
event-log port (infra/adapters/eventlog): a plain producer and a tail.
"""
import asyncio
import json
import logging
from typing import Any

from opentelemetry.trace import Tracer

from infra.adapters import tracing
from infra.adapters.eventlog import EventLog, LogError, Producer, Tail
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.bus")


class OutcomePending(Exception):
    """No outcome arrived in time; the command may still be decided."""


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class CommandBus:
    def __init__(self, settings: Settings, log_: EventLog, tracer: Tracer | None = None):
        self.settings = settings
        self.log = log_
        self.tracer = tracer or tracing.tracer()
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
        future = asyncio.get_running_loop().create_future()
        self.pending[command["command_id"]] = future  # before producing: the reply may come before the wait
        try:
            await self.produce(command)
            return await asyncio.wait_for(future, self.settings.command_timeout_s)
        except asyncio.TimeoutError:
            raise OutcomePending(command["command_id"]) from None
        finally:
            self.pending.pop(command["command_id"], None)

    async def produce(self, command: dict[str, Any]) -> None:
        topic = self.settings.commands_topic
        with tracing.producing(self.tracer, topic, command) as (span, headers):
            where = await (await self.producer.send(topic, dumps(command), command["tenant_id"].encode(), headers))
            tracing.delivered(span, where.partition, where.offset)
