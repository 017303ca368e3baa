"""A minimal, strict SSE client over httpx for tests: parses id/event/data/retry and comments."""
import json
from dataclasses import dataclass, field
from typing import AsyncIterator

import httpx


@dataclass
class Message:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self):
        return json.loads(self.data)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Yield each dispatched message (comments and retry ride along on the next one or alone)."""
    current, data_lines = Message(), []
    async for line in response.aiter_lines():
        if line == "":
            if data_lines or current.comments or current.retry is not None or current.id is not None:
                current.data = "\n".join(data_lines)
                yield current
            current, data_lines = Message(), []
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = int(value)
