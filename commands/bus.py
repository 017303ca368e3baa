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

from infra.adapters.eventlog import EventLog, LogError, Producer, Tail
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.bus")


class OutcomePending(Exception):
    """No outcome arrived in time; the command may still be decided."""


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class CommandBus:
    def __init__(self, settings: Settings, log_: EventLog):
        self.settings = settings
        self.log = log_
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
        """Produce a command envelope and return its outcome, or raise OutcomePending."""
        future = asyncio.get_running_loop().create_future()
        self.pending[command["command_id"]] = future  # before producing: the reply may come before the wait
        try:
            headers = [("traceparent", command["traceparent"].encode())] if command.get("traceparent") else None
            await (await self.producer.send(self.settings.commands_topic, dumps(command),
                                            command["tenant_id"].encode(), headers))
            return await asyncio.wait_for(future, self.settings.command_timeout_s)
        except asyncio.TimeoutError:
            raise OutcomePending(command["command_id"]) from None
        finally:
            self.pending.pop(command["command_id"], None)
