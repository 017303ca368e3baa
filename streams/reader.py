"""One subscriber's reading of one channel: replay from its position, the seam, then the live tail.

The reader registers with the hub *before* it reads the channel's head, so every event committed
after that read is also in its queue; the seam is closed by dropping queued events it already
sent and by reading from the table any it has not seen yet (a gap). Its position is the channel
`seq`, which is the SSE `id`. Everything it sends is ready-encoded frames or notices.
"""
import asyncio
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from psycopg.rows import dict_row
from sse_starlette.sse import ServerSentEvent

from streams.hub import OVERFLOW, ChannelHub, Subscription

RETRY_MS = 2000
PAGE = 1000


def event(row: dict[str, Any]) -> bytes:
    """The SSE frame of a channel row, encoded once: the hub hands the same row to every subscriber."""
    frame = row.get("frame")
    if frame is None:
        frame = row["frame"] = ServerSentEvent(row["envelope"], event=row["type"], id=str(row["seq"])).encode()
    return frame


def notice(name: str, **data: Any) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(data), event=name)


async def queued(queue: asyncio.Queue) -> list:
    """Wait for the next item, then take whatever else is already queued (sent as one write)."""
    items = [await queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@dataclass
class ChannelReader:
    hub: ChannelHub
    sub: Subscription
    schema: str
    head: int    # the channel's last seq when the reader opened
    oldest: int  # the oldest seq it still retains

    @classmethod
    async def open(cls, tables, hub: ChannelHub, tenant_id: str, channel: str) -> "ChannelReader | None":
        """Subscribe, then read the channel's head; None (unsubscribed) if the channels model has no generation.

        `tables` is where the channels read model lives (`streams.services.ChannelTables`)."""
        sub = hub.subscribe(tenant_id, channel)
        async with tables.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            live = await tables.generations.live_on(conn, "channels")
            if live is None:
                hub.unsubscribe(sub)
                return None
            await cur.execute(f"SELECT seq, oldest FROM {live[0]}.channel_heads "
                              "WHERE tenant_id = %s AND channel = %s", (tenant_id, channel))
            head = await cur.fetchone()
        return cls(hub, sub, live[0], head["seq"], head["oldest"]) if head else cls(hub, sub, live[0], 0, 1)

    def close(self) -> None:
        self.hub.unsubscribe(self.sub)

    async def rows(self, after: int, upto: int | None = None) -> list[dict[str, Any]]:
        return await self.hub.rows(self.schema, self.sub.tenant_id, self.sub.channel, after, upto, PAGE)

    async def frames(self, after: int | None) -> AsyncIterator[ServerSentEvent | bytes]:
        """Everything after `after` (None: only what comes from now on), then the live tail, until overflow."""
        try:
            yield ServerSentEvent(comment="runledger stream", retry=RETRY_MS)
            last = self.head if after is None else after
            if after is not None and after > self.head:
                yield notice("replay_incomplete", reason="unknown_id", requested_after=after, resumes_after=self.head)
                last = self.head
            elif after is not None and after < self.oldest - 1:
                yield notice("replay_incomplete", reason="trimmed", requested_after=after,
                             resumes_after=self.oldest - 1)
                last = self.oldest - 1
            while rows := await self.rows(last):
                yield b"".join(map(event, rows))
                last = rows[-1]["seq"]
            async for chunk in self.live(last):
                yield chunk
        finally:
            self.close()

    async def live(self, last: int) -> AsyncIterator[ServerSentEvent | bytes]:
        """The live tail after `last`: each wake-up sends what is queued (gaps filled from the table) as one write."""
        while True:
            frames = []
            for item in await queued(self.sub.queue):
                if item is OVERFLOW:
                    if frames:
                        yield b"".join(frames)
                    yield notice("overflow", reason="this client fell too far behind", resume_after=last)
                    return
                if item["seq"] <= last:
                    continue
                while item["seq"] > last + 1:
                    gap = await self.rows(last, item["seq"] - 1)
                    frames += [event(row) for row in gap]
                    last = gap[-1]["seq"] if gap else item["seq"] - 1
                frames.append(event(item))
                last = item["seq"]
            if frames:
                yield b"".join(frames)
