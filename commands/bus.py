"""The API's side of the command round trip: produce to `ledger.commands`, await `ledger.replies`.

Every API process reads all reply partitions from their end (read_committed, so only replies
whose transaction committed are seen) and resolves the future registered for each command id
before the command was produced, so a reply can never arrive unseen.
"""
import asyncio
import json
import logging
from typing import Any

from aiokafka import TopicPartition

from infra.adapters import kafka
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.bus")


class OutcomePending(Exception):
    """No outcome arrived in time; the command may still be decided."""


class CommandBus:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pending: dict[str, asyncio.Future] = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings)
        self.producer = kafka.command_producer(self.settings)
        self.replies = kafka.reader(self.settings)
        await self.producer.start()
        await self.replies.start()
        partitions = await kafka.partitions_of(self.settings, self.settings.replies_topic)
        tps = [TopicPartition(self.settings.replies_topic, p) for p in sorted(partitions)]
        self.replies.assign(tps)
        await self.replies.seek_to_end(*tps)
        for tp in tps:
            await self.replies.position(tp)
        self.task = asyncio.create_task(self.listen(), name="reply-listener")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.replies.stop()
        await self.producer.stop()

    async def listen(self) -> None:
        while True:
            batches = await self.replies.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self.resolve(json.loads(record.value))

    def resolve(self, reply: dict[str, Any]) -> None:
        future = self.pending.pop(reply.get("command_id"), None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def submit(self, command: dict[str, Any]) -> dict[str, Any]:
        """Produce a command envelope and return its outcome, or raise OutcomePending."""
        future = asyncio.get_running_loop().create_future()
        self.pending[command["command_id"]] = future
        try:
            headers = [("traceparent", command["traceparent"].encode())] if command.get("traceparent") else None
            await self.producer.send_and_wait(self.settings.commands_topic, kafka.dumps(command),
                                              key=command["tenant_id"].encode(), headers=headers)
            return await asyncio.wait_for(future, self.settings.command_timeout_s)
        except asyncio.TimeoutError:
            raise OutcomePending(command["command_id"]) from None
        finally:
            self.pending.pop(command["command_id"], None)
