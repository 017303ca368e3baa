"""The run's topics (one partition each, named after a unique prefix) and the pre-produced commands."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from bench.kafka.records import TENANT, command
from bench.lib.topics import create_topic, delete_topics


@dataclass(frozen=True)
class Topics:
    prefix: str
    commands_count: int

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def replies(self) -> str:
        return f"{self.prefix}.replies"

    def raw(self, client: str) -> str:
        return f"{self.prefix}.raw-{client}"


async def create(bootstrap: str, topics: Topics, clients: list[str]) -> None:
    for name in (topics.commands, topics.events, topics.replies, *map(topics.raw, clients)):
        await create_topic(bootstrap, name, 1)


async def prefill(bootstrap: str, topics: Topics) -> None:
    """Produce the commands every cell reads from offset 0 (each cell is a consumer group of its own)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        for n in range(topics.commands_count):
            futures.append(await producer.send(topics.commands, command(n), key=TENANT, partition=0))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def remove(bootstrap: str, topics: Topics) -> None:
    await delete_topics(bootstrap, [topics.prefix])
