"""The run's topics (one partition each, named after a unique prefix) and the pre-produced commands."""
from __future__ import annotations

from dataclasses import dataclass


from bench.kafka.records import TENANT, command
from bench.lib.topics import create_topic, delete_topics, produce_all


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
    await produce_all(bootstrap, ({"topic": topics.commands, "value": command(n), "key": TENANT, "partition": 0}
                                  for n in range(topics.commands_count)))


async def remove(bootstrap: str, topics: Topics) -> None:
    await delete_topics(bootstrap, [topics.prefix])
