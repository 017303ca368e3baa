"""SSE routes: who may follow which channel, and from where; streams/reader.py does the reading."""
import re
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query
from sse_starlette.sse import EventSourceResponse

from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import MinSeq, StreamCaller, WaitMs, require, stream_caller
from infra.adapters.http.errors import Refused
from streams.mux import MAX_CHANNELS, BadChannel, BadPositions, Channel, Multiplex, channels_of, positions_of
from streams.reader import ChannelReader
from streams.services import Sources, SourcesDep

router = APIRouter(prefix="/v1/streams", tags=["streams"])
EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII only (str.isdigit takes "²"), and within a BIGINT


WATCHER_ROLES = ("operator", "admin", "auditor")  # the tenant feed and run channels
APPROVAL_WATCHER_ROLES = ("operator", "admin", "approver", "auditor")  # the approvals channel
Watcher = Annotated[Principal, require(*WATCHER_ROLES, caller=stream_caller, what="stream")]
ApprovalWatcher = Annotated[Principal, require(*APPROVAL_WATCHER_ROLES, caller=stream_caller, what="stream")]


def resume_point(header: str | None, query: str | None) -> int | None:
    raw = header if header is not None else query
    if raw is None or raw == "":
        return None
    if not EVENT_ID.fullmatch(raw):
        raise Refused(400, "invalid_last_event_id",
                      f"Last-Event-ID must be a channel position (1-18 digits 0-9), not {raw[:40]!r}")
    return int(raw)


async def stream(sources: Sources, principal: Principal, channel: str,
                 last_event_id: str | None, query_last_event_id: str | None, must_exist: bool,
                 min_seq: int | None = None, wait_ms: int = 2000) -> EventSourceResponse:
    after = resume_point(last_event_id, query_last_event_id)
    await sources.catch_up(principal.tenant_id, min_seq, wait_ms)
    reader = await ChannelReader.open(sources.tables, sources.hub, principal.tenant_id, channel)
    if reader is None or (must_exist and reader.head == 0):
        if reader:
            reader.close()
        raise Refused(404, "not_found", f"no stream {channel} in this tenant")
    return EventSourceResponse(reader.frames(after), ping=15, send_timeout=30,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


LastIdQuery = Annotated[str | None, Query(alias="last_event_id", description="resume after this id (first connection)")]
LastIdHeader = Annotated[str | None, Header(alias="Last-Event-ID")]


@router.get("/tenant", summary="Every event of the caller's tenant")
async def tenant_feed(principal: Watcher, sources: SourcesDep, last_event_id: LastIdHeader = None,
                      last_event_id_query: LastIdQuery = None, min_seq: MinSeq = None,
                      wait_ms: WaitMs = 2000) -> EventSourceResponse:
    return await stream(sources, principal, "tenant", last_event_id, last_event_id_query, must_exist=False,
                        min_seq=min_seq, wait_ms=wait_ms)


@router.get("/approvals", summary="The approval queue: requested, votes, granted, denied, expired")
async def approvals_feed(principal: ApprovalWatcher, sources: SourcesDep,
                         last_event_id: LastIdHeader = None, last_event_id_query: LastIdQuery = None,
                         min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> EventSourceResponse:
    return await stream(sources, principal, "approvals", last_event_id, last_event_id_query, must_exist=False,
                        min_seq=min_seq, wait_ms=wait_ms)


@router.get("/runs/{run_id}", summary="One run's events, with its tool calls and approvals")
async def run_feed(run_id: UUID, principal: Watcher, sources: SourcesDep,
                   last_event_id: LastIdHeader = None, last_event_id_query: LastIdQuery = None,
                   min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> EventSourceResponse:
    """A run that does not exist in the caller's tenant is a 404; pass the chain_seq of the command
    that created it as `min_seq` to wait until the stream knows it."""
    return await stream(sources, principal, f"run:{run_id}", last_event_id, last_event_id_query,
                        must_exist=True, min_seq=min_seq, wait_ms=wait_ms)


ChannelNames = Annotated[list[str], Query(alias="channel", min_length=1, max_length=MAX_CHANNELS,
                                          description="a channel to follow: tenant, approvals or runs/<run_id> "
                                                      "(repeat for each, at most 8)")]


def roles_of(channel: Channel) -> tuple[str, ...]:
    return APPROVAL_WATCHER_ROLES if channel.name == "approvals" else WATCHER_ROLES


def check_may_follow(principal: Principal, channels: list[Channel]) -> None:
    for channel in channels:
        if not set(roles_of(channel)).intersection(principal.roles):
            raise Refused(403, "missing_role", f"the channel {channel.name} needs one of the roles "
                                               f"{sorted(roles_of(channel))}", {"channel": channel.name})


@router.get("/multiplex", summary="Several channels on one connection (one stream per browser tab)")
async def multiplex_feed(principal: StreamCaller, sources: SourcesDep, channel: ChannelNames,
                         last_event_id: LastIdHeader = None, last_event_id_query: LastIdQuery = None,
                         min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> EventSourceResponse:
    """Each message's `event` is its channel, `data` the envelope; `id` is every channel's position after it,
    in the order asked, joined by dots (`12.0`): resume with it as Last-Event-ID. The first message,
    `subscribed`, says where each channel starts and up to which chain_seq they were read (streams/mux.py).
    Each channel needs the roles of its own stream; a run this tenant does not have is a 404."""
    try:
        wanted = channels_of(channel)
        afters = positions_of(last_event_id if last_event_id is not None else last_event_id_query, len(wanted))
    except BadChannel as error:
        raise Refused(400, "invalid_channel", str(error)) from None
    except BadPositions as error:
        raise Refused(400, "invalid_last_event_id", str(error)) from None
    check_may_follow(principal, wanted)
    await sources.catch_up(principal.tenant_id, min_seq, wait_ms)
    mux = await Multiplex.open(sources.tables, sources.hub, principal.tenant_id, wanted)
    missing = mux.missing() if mux else None
    if mux is None or missing:
        if mux:
            mux.close()
        name = missing.name if missing else wanted[0].name
        raise Refused(404, "not_found", f"no stream {name} in this tenant", {"channel": name})
    return EventSourceResponse(mux.frames(afters), ping=15, send_timeout=30,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
