"""SSE streams: replay from Last-Event-ID, then the live tail, with no gap and no duplicate at the seam.

A subscriber registers with the hub *before* it replays, so every event committed after the replay
query is also in its queue; the seam is closed by dropping queued events it already sent and by
reading from the database any it has not seen yet (a gap). Its position is the channel `seq`,
which is the SSE `id`.
"""
import asyncio
import json
import re
from typing import Annotated, Any, AsyncIterator
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from psycopg.rows import dict_row
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import MinSeq, WaitMs, require, stream_caller
from infra.adapters.http.errors import Refused
from queries.api.services import ReadModelsDep
from queries.readmodels import ReadModels
from streams.hub import OVERFLOW, ChannelHub, Subscription

router = APIRouter(prefix="/v1/streams", tags=["streams"])
RETRY_MS = 2000
PAGE = 1000
EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII only (str.isdigit takes "²"), and within a BIGINT


async def get_hub(request: Request) -> ChannelHub:
    return request.app.state.hub


HubDep = Annotated[ChannelHub, Depends(get_hub)]
Watcher = Annotated[Principal, require("operator", "admin", "auditor", caller=stream_caller, what="stream")]
ApprovalWatcher = Annotated[Principal, require("operator", "admin", "approver", "auditor", caller=stream_caller,
                                               what="stream")]


def resume_point(header: str | None, query: str | None) -> int | None:
    raw = header if header is not None else query
    if raw is None or raw == "":
        return None
    if not EVENT_ID.fullmatch(raw):
        raise Refused(400, "invalid_last_event_id",
                      f"Last-Event-ID must be a channel position (1-18 digits 0-9), not {raw[:40]!r}")
    return int(raw)


async def channel_state(read_models: ReadModels, tenant_id: str, channel: str) -> tuple[str, int, int] | None:
    """Return (schema, head, oldest retained) of a channel, or None if it has no event yet."""
    async with read_models.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        live = await read_models.generations.live_on(conn, "channels")
        if live is None:
            return None
        schema = live[0]
        await cur.execute(f"SELECT seq, oldest FROM {schema}.channel_heads "
                          "WHERE tenant_id = %s AND channel = %s", (tenant_id, channel))
        head = await cur.fetchone()
    return (schema, head["seq"], head["oldest"]) if head else (schema, 0, 1)


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


async def follow(hub: ChannelHub, sub: Subscription, schema: str, head: int, oldest: int,
                 after: int | None) -> AsyncIterator[ServerSentEvent | bytes]:
    try:
        yield ServerSentEvent(comment="runledger stream", retry=RETRY_MS)
        last = head if after is None else after
        if after is not None and after > head:
            yield notice("replay_incomplete", reason="unknown_id", requested_after=after, resumes_after=head)
            last = head
        elif after is not None and after < oldest - 1:
            yield notice("replay_incomplete", reason="trimmed", requested_after=after, resumes_after=oldest - 1)
            last = oldest - 1
        while rows := await hub.rows(schema, sub.tenant_id, sub.channel, last, limit=PAGE):
            yield b"".join(map(event, rows))
            last = rows[-1]["seq"]
        async for chunk in live(hub, sub, schema, last):
            yield chunk
    finally:
        hub.unsubscribe(sub)


async def live(hub: ChannelHub, sub: Subscription, schema: str, last: int) -> AsyncIterator[ServerSentEvent | bytes]:
    """The live tail after `last`: each wake-up sends what is queued (gaps filled from the table) as one write."""
    while True:
        frames = []
        for item in await queued(sub.queue):
            if item is OVERFLOW:
                if frames:
                    yield b"".join(frames)
                yield notice("overflow", reason="this client fell too far behind", resume_after=last)
                return
            if item["seq"] <= last:
                continue
            while item["seq"] > last + 1:
                gap = await hub.rows(schema, sub.tenant_id, sub.channel, last, item["seq"] - 1, PAGE)
                frames += [event(row) for row in gap]
                last = gap[-1]["seq"] if gap else item["seq"] - 1
            frames.append(event(item))
            last = item["seq"]
        if frames:
            yield b"".join(frames)


async def stream(models: ReadModels, hub: ChannelHub, principal: Principal, channel: str,
                 last_event_id: str | None, query_last_event_id: str | None, must_exist: bool,
                 min_seq: int | None = None, wait_ms: int = 2000) -> EventSourceResponse:
    after = resume_point(last_event_id, query_last_event_id)
    await models.wait_for("channels", principal.tenant_id, min_seq, wait_ms)
    sub = hub.subscribe(principal.tenant_id, channel)
    state = await channel_state(models, principal.tenant_id, channel)
    if state is None or (must_exist and state[1] == 0):
        hub.unsubscribe(sub)
        raise Refused(404, "not_found", f"no stream {channel} in this tenant")
    schema, head, oldest = state
    return EventSourceResponse(follow(hub, sub, schema, head, oldest, after), ping=15,
                               send_timeout=30, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


LastIdQuery = Annotated[str | None, Query(alias="last_event_id", description="resume after this id (first connection)")]
LastIdHeader = Annotated[str | None, Header(alias="Last-Event-ID")]


@router.get("/tenant", summary="Every event of the caller's tenant")
async def tenant_feed(principal: Watcher, models: ReadModelsDep, hub: HubDep, last_event_id: LastIdHeader = None,
                      last_event_id_query: LastIdQuery = None, min_seq: MinSeq = None,
                      wait_ms: WaitMs = 2000) -> EventSourceResponse:
    return await stream(models, hub, principal, "tenant", last_event_id, last_event_id_query, must_exist=False,
                        min_seq=min_seq, wait_ms=wait_ms)


@router.get("/approvals", summary="The approval queue: requested, votes, granted, denied, expired")
async def approvals_feed(principal: ApprovalWatcher, models: ReadModelsDep, hub: HubDep,
                         last_event_id: LastIdHeader = None, last_event_id_query: LastIdQuery = None,
                         min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> EventSourceResponse:
    return await stream(models, hub, principal, "approvals", last_event_id, last_event_id_query, must_exist=False,
                        min_seq=min_seq, wait_ms=wait_ms)


@router.get("/runs/{run_id}", summary="One run's events, with its tool calls and approvals")
async def run_feed(run_id: UUID, principal: Watcher, models: ReadModelsDep, hub: HubDep,
                   last_event_id: LastIdHeader = None, last_event_id_query: LastIdQuery = None,
                   min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> EventSourceResponse:
    """A run that does not exist in the caller's tenant is a 404; pass the chain_seq of the command
    that created it as `min_seq` to wait until the stream knows it."""
    return await stream(models, hub, principal, f"run:{run_id}", last_event_id, last_event_id_query,
                        must_exist=True, min_seq=min_seq, wait_ms=wait_ms)
