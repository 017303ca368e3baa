"""Fan-out of SSE channel events: one LISTEN connection per process, one read per notification.

The channels projector NOTIFYs in the transaction that writes a batch, naming each channel's new
head. The hub reads the new rows of a channel once and offers them to every subscriber of that
channel through a bounded queue. A subscriber whose queue is full is marked overflowed: its
queue is replaced by a single marker, so a slow client costs at most `buffer` events of memory.
"""
import asyncio
import json
import logging
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from opentelemetry.trace import Tracer
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from infra.adapters import tracing
from infra.adapters.meters import StreamMeters, stream_meters
from projectors.channels import NOTIFY_CHANNEL

log = logging.getLogger("runledger.streams")
OVERFLOW = object()


@dataclass(eq=False)
class Subscription:
    tenant_id: str
    channel: str
    queue: asyncio.Queue
    overflowed: bool = False
    meters: StreamMeters | None = None  # counts the overflow and what it drops, off the normal path

    def offer(self, row: dict[str, Any]) -> None:
        if self.overflowed:
            if self.meters:
                self.meters.missed(self.channel, 1)
            return
        try:
            self.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.overflowed = True
            dropped = self.queue.qsize() + 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(OVERFLOW)
            if self.meters:
                self.meters.overflowed(self.channel, dropped)


async def next_unless_stopped(notifies, stop: asyncio.Event):
    """Return the next notification, or None once stop is set (the pending read is cancelled)."""
    if stop.is_set():
        return None
    waiter = asyncio.ensure_future(anext(notifies))
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if waiter in done:
        return waiter.result()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    return None


@dataclass
class ChannelHub:
    database_url: str
    pool: AsyncConnectionPool
    topic_prefix: str
    buffer: int = 1000
    subscribers: dict[tuple[str, str], set[Subscription]] = field(default_factory=dict)
    delivered: dict[tuple[str, str], int] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tracer: Tracer = field(default_factory=tracing.tracer)  # a delivery span per channel and notification
    # For health: when the LISTEN connection came up, when it was lost (None while up) and why.
    listening_since: datetime | None = None
    lost_since: datetime | None = None
    lost_because: str | None = None
    connect_timeout_s: int = 10
    meters: StreamMeters = field(default_factory=stream_meters)  # subscribers, offered, overflows, dropped

    def subscribe(self, tenant_id: str, channel: str) -> Subscription:
        sub = Subscription(tenant_id, channel, asyncio.Queue(self.buffer), meters=self.meters)
        self.subscribers.setdefault((tenant_id, channel), set()).add(sub)
        self.meters.subscribed(channel, 1)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subscribers.get((sub.tenant_id, sub.channel))
        if subs is not None and sub in subs:
            subs.discard(sub)
            self.meters.subscribed(sub.channel, -1)
            if not subs:
                del self.subscribers[(sub.tenant_id, sub.channel)]
                self.delivered.pop((sub.tenant_id, sub.channel), None)

    async def run(self, stop: asyncio.Event) -> None:
        """LISTEN and fan out until stop is set; reconnect if the connection drops."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True,
                                                                 connect_timeout=self.connect_timeout_s) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening(True)
                    # psycopg's notifies() holds the connection lock while suspended at a yield;
                    # leaving it unclosed would deadlock the connection's exit on shutdown.
                    async with aclosing(conn.notifies()) as notifies:
                        while (note := await next_unless_stopped(notifies, stop)) is not None:
                            await self.dispatch(json.loads(note.payload))
            except (psycopg.Error, OSError) as error:
                self.listening(False, repr(error))
                log.warning("SSE hub lost its LISTEN connection (%r); reconnecting", error)
                await asyncio.sleep(1.0)

    def listening(self, up: bool, because: str | None = None) -> None:
        now = datetime.now(timezone.utc)
        if up:
            self.ready.set()
            self.listening_since, self.lost_since, self.lost_because = now, None, None
        else:
            self.ready.clear()
            self.lost_since, self.lost_because = self.lost_since or now, because

    async def dispatch(self, note: dict[str, Any]) -> None:
        for tenant_id, channel, head in note["channels"]:
            key = (tenant_id, channel)
            if key not in self.subscribers:
                continue
            after = self.delivered.get(key, head - 1)
            if head <= after:
                continue
            rows = await self.rows(note["schema"], tenant_id, channel, after, head)
            subs = list(self.subscribers.get(key, ()))
            with tracing.delivering(self.tracer, tenant_id, channel, rows, len(subs)):
                for row in rows:
                    for sub in subs:
                        sub.offer(row)
            self.meters.handed(channel, len(rows) * len(subs))
            self.delivered[key] = head

    async def rows(self, schema: str, tenant_id: str, channel: str, after: int, upto: int | None = None,
                   limit: int = 1000) -> list[dict[str, Any]]:
        """Return a channel's events with after < seq ≤ upto, oldest first (the envelope as JSON text)."""
        bound = "AND seq <= %s" if upto is not None else ""
        params = (tenant_id, channel, after, *((upto,) if upto is not None else ()), limit)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            # The envelope as PostgreSQL's JSON text: it goes into the SSE frame as it is, instead of
            # being parsed into a dict here and serialised again for the frame.
            await cur.execute(f"SELECT seq, type, envelope::text AS envelope FROM {schema}.channel_events WHERE tenant_id = %s "
                              f"AND channel = %s AND seq > %s {bound} ORDER BY seq LIMIT %s", params)
            return await cur.fetchall()
