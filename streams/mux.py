"""Several channels on one connection: the console's one SSE stream per tab (docs/console.md).

Browsers open at most six HTTP/1.1 connections per origin, so a page that follows the approval
queue and a run's timeline must hold one stream for both. Each channel is read by its own
ChannelReader, exactly as a stream of that channel alone would be (streams/reader.py: subscribe,
then read the head; replay; the live tail, gaps filled from the table), and each message names its
channel as its SSE `event`, with the envelope, as recorded, as its `data`.

The resume point is every channel's position at once: a message's `id` is the position of each
channel after it, in the order the channels were asked for (`12.0.7`). Whatever message a client
saw last, reconnecting with its id as Last-Event-ID continues each channel exactly where it
stopped: no gap, no duplicate. The first message, `subscribed`, has the positions the stream starts
from as its id, so a client that reconnects before any event arrives resumes exactly too, and says
up to which chain_seq the channels were read: a client that reads a query with that as `min_seq`,
then applies what the stream sends, has missed nothing in between.
"""
import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from uuid import UUID

from sse_starlette.sse import ServerSentEvent

from streams.hub import OVERFLOW, ChannelHub
from streams.reader import RETRY_MS, ChannelReader, notice

MAX_CHANNELS = 8
POSITION = re.compile(r"[0-9]{1,18}")
RUNS = "runs/"


class BadChannel(ValueError):
    """A channel name this API does not have, or one asked for twice."""


class BadPositions(ValueError):
    """A resume point that is not one position (or nothing) per channel."""


@dataclass(frozen=True)
class Channel:
    name: str  # as streams name it: tenant, approvals, runs/<run id>
    key: str   # as the channels read model keys it: tenant, approvals, run:<run id>

    @property
    def is_run(self) -> bool:
        return self.name.startswith(RUNS)


def channel_of(raw: str) -> Channel:
    """The channel a client names: `tenant`, `approvals` or `runs/<run id>` (a run id in any UUID spelling)."""
    if raw in ("tenant", "approvals"):
        return Channel(raw, raw)
    if raw.startswith(RUNS):
        try:
            run_id = UUID(raw[len(RUNS):])
        except ValueError:
            raise BadChannel(f"{raw[:60]!r} does not name a run: runs/<run id, a UUID>") from None
        return Channel(f"{RUNS}{run_id}", f"run:{run_id}")
    raise BadChannel(f"no channel {raw[:60]!r}; channels are tenant, approvals and runs/<run id>")


def channels_of(raw: list[str]) -> list[Channel]:
    channels = [channel_of(name) for name in raw]
    if len({c.name for c in channels}) < len(channels):
        raise BadChannel("each channel may be asked for once")
    return channels


def positions_of(raw: str | None, count: int) -> list[int | None]:
    """The resume point: one position per channel, joined by dots; an empty one (or none at all) is live only."""
    if raw is None or raw == "":
        return [None] * count
    parts = raw.split(".", count)
    if len(parts) != count or not all(p == "" or POSITION.fullmatch(p) for p in parts):
        raise BadPositions(f"Last-Event-ID must be {count} channel position(s) (1-18 digits 0-9, or nothing "
                           f"for live only) joined by '.', one per channel in the order asked, not {raw[:60]!r}")
    return [int(p) if p else None for p in parts]


@dataclass
class Lane:
    """One channel of a multiplexed stream: its reader and the last position sent."""
    channel: Channel
    reader: ChannelReader
    last: int = 0

    def start(self, after: int | None) -> ServerSentEvent | None:
        """Take the position to resume after; a notice if the channel cannot replay from there."""
        head, oldest = self.reader.head, self.reader.oldest
        self.last = head if after is None or after > head else max(after, oldest - 1)
        if after is not None and after > head:
            return notice("replay_incomplete", channel=self.channel.name, reason="unknown_id",
                          requested_after=after, resumes_after=head)
        if after is not None and after < oldest - 1:
            return notice("replay_incomplete", channel=self.channel.name, reason="trimmed",
                          requested_after=after, resumes_after=oldest - 1)
        return None


def taken(queue: asyncio.Queue, first: Any) -> list:
    items = [first]
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@dataclass
class Multiplex:
    lanes: list[Lane]
    applied: int  # the channels model's chain_seq for the tenant, read after every channel's head
    closed: bool = field(default=False)

    @classmethod
    async def open(cls, tables, hub: ChannelHub, tenant_id: str, channels: list[Channel]) -> "Multiplex | None":
        """Subscribe to each channel, then read the tenant's applied chain_seq; None if there is no channels model."""
        lanes: list[Lane] = []
        try:
            for channel in channels:
                reader = await ChannelReader.open(tables, hub, tenant_id, channel.key)
                if reader is None:
                    cls(lanes, 0).close()
                    return None
                lanes.append(Lane(channel, reader))
            return cls(lanes, await applied_seq(tables, lanes[0].reader.schema, tenant_id))
        except BaseException:
            cls(lanes, 0).close()
            raise

    def missing(self) -> Channel | None:
        """The first run channel asked for that this tenant does not have."""
        return next((lane.channel for lane in self.lanes if lane.channel.is_run and lane.reader.head == 0), None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for lane in self.lanes:
                lane.reader.close()

    def position(self) -> str:
        return ".".join(str(lane.last) for lane in self.lanes)

    def frame(self, lane: Lane, row: dict[str, Any]) -> bytes:
        lane.last = row["seq"]
        return ServerSentEvent(row["envelope"], event=lane.channel.name, id=self.position()).encode()

    def subscribed(self) -> ServerSentEvent:
        return ServerSentEvent(json.dumps({"channels": [lane.channel.name for lane in self.lanes],
                                           "positions": {lane.channel.name: lane.last for lane in self.lanes},
                                           "chain_seq": self.applied}), event="subscribed", id=self.position())

    async def frames(self, afters: list[int | None]) -> AsyncIterator[ServerSentEvent | bytes]:
        """Each channel's events after its position, channel by channel, then every live tail, until overflow."""
        try:
            yield ServerSentEvent(comment="runledger stream", retry=RETRY_MS)
            notices = [n for lane, after in zip(self.lanes, afters) if (n := lane.start(after)) is not None]
            yield self.subscribed()
            for item in notices:
                yield item
            for lane in self.lanes:
                while rows := await lane.reader.rows(lane.last):
                    yield b"".join([self.frame(lane, row) for row in rows])
            async for chunk in self.live():
                yield chunk
        finally:
            self.close()

    async def live(self) -> AsyncIterator[ServerSentEvent | bytes]:
        """Wait on every channel's queue at once; each wake-up sends what is queued (gaps filled) as one write."""
        waiting = {asyncio.ensure_future(lane.reader.sub.queue.get()): lane for lane in self.lanes}
        try:
            while True:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                frames: list[bytes] = []
                for task in sorted(done, key=lambda t: self.lanes.index(waiting[t])):
                    lane = waiting.pop(task)
                    items = taken(lane.reader.sub.queue, task.result())
                    if OVERFLOW in items:
                        if frames:
                            yield b"".join(frames)
                        yield notice("overflow", channel=lane.channel.name, reason="this client fell too far behind",
                                     resume_after=self.position())
                        return
                    frames += await self.tail(lane, items)
                    waiting[asyncio.ensure_future(lane.reader.sub.queue.get())] = lane
                if frames:
                    yield b"".join(frames)
        finally:
            for task in waiting:
                task.cancel()

    async def tail(self, lane: Lane, items: list[dict[str, Any]]) -> list[bytes]:
        """The frames of a lane's queued rows it has not sent, with any gap before them read from the table."""
        frames = []
        for item in items:
            if item["seq"] <= lane.last:
                continue
            while item["seq"] > lane.last + 1:
                gap = await lane.reader.rows(lane.last, item["seq"] - 1)
                frames += [self.frame(lane, row) for row in gap]
                if not gap:
                    lane.last = item["seq"] - 1
            frames.append(self.frame(lane, item))
        return frames


async def applied_seq(tables, schema: str, tenant_id: str) -> int:
    """The tenant's chain_seq the channels model has applied (in the schema its readers read)."""
    async with tables.pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(f"SELECT chain_seq FROM {schema}.heads WHERE tenant_id = %s", (tenant_id,))
        row = await cur.fetchone()
    return row[0] if row else 0
