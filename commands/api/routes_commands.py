from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from commands import batch
from commands.api.batch_docs import BATCH_REQUEST
from commands.api.services import BusDep
from commands.bus import LogUnavailable, OutcomePending
from commands.intake import command_envelope
from domain.errors import DomainError
from infra.adapters import telemetry
from infra.adapters.http.deps import Caller, SettingsDep
from infra.adapters.http.errors import Refused, status_of_code

router = APIRouter(prefix="/v1/commands", tags=["commands"])

EXAMPLE = {"type": "RequestRun", "agent_id": "support-bot", "project": "helpdesk"}
PRIVATE = ("request_digest", "idempotency_key", "http_status", "tenant_id")  # a reply's fields no response shows


async def read_limited(request: Request, limit: int) -> bytes:
    check_declared_length(request.headers.get("content-length"), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_declared_length(declared: str | None, limit: int) -> None:
    """Refuse a Content-Length over the limit before reading; one that is not ASCII digits at all."""
    if declared is None:
        return
    if not (declared.isascii() and declared.isdigit()):  # str.isdigit alone takes "²", which int() refuses
        raise Refused(400, "invalid_content_length", "Content-Length must be a number of bytes in ASCII digits")
    size = declared.lstrip("0") or "0"
    if len(size) > len(str(limit)) or int(size) > limit:  # int() itself refuses over 4300 digits
        raise Refused(413, "body_too_large", f"the body is {declared[:40]} bytes; the limit is {limit}")


@router.post("", summary="Send a command and wait for its outcome",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/AnyCommand"},
                                      "example": EXAMPLE}}}})
async def send_command(request: Request, principal: Caller, bus: BusDep,
                       settings: SettingsDep,
                       idempotency_key: Annotated[str | None, Header()] = None,
                       traceparent: Annotated[str | None, Header(description="W3C trace context")] = None,
                       x_correlation_id: Annotated[str | None, Header()] = None) -> JSONResponse:
    raw = await read_limited(request, settings.max_body_bytes)
    with telemetry.continued(request.headers):  # under the HTTP request's span; the bus opens `send`
        command = command_envelope(principal, raw, idempotency_key,
                                   telemetry.current_traceparent(), x_correlation_id, settings.ops_tenant)
        return await submit(bus, command, settings)


async def submit(bus, command: dict, settings) -> JSONResponse:
    try:
        reply = await bus.submit(command)
    except LogUnavailable as error:
        raise unavailable(error, settings, keyed=command.get("idempotency_key") is not None) from None
    except OutcomePending:
        raise Refused(504, "outcome_pending",
                      f"command {command['command_id']} was queued but no outcome arrived within "
                      f"{settings.command_timeout_s}s; retry with the same Idempotency-Key to get "
                      f"its outcome") from None
    return outcome_response(reply)


def unavailable(error: LogUnavailable, settings, keyed: bool = True, batch: bool = False) -> Refused:
    """503 log_unavailable: what became of the command(s), and the retry that is exact."""
    key = "the same idempotency_key for each command" if batch else "the same Idempotency-Key"
    return Refused(503, "log_unavailable", unavailable_reason(error, settings, key, keyed),
                   details={"sent": error.sent}, headers={"Retry-After": str(settings.unavailable_retry_after_s)})


def unavailable_reason(error: LogUnavailable, settings, key: str, keyed: bool = True) -> str:
    retry = f"retry after {settings.unavailable_retry_after_s}s with {key}"
    if not error.sent:
        return f"the event log cannot take commands now ({error.why}); nothing was recorded: {retry}"
    unkeyed = "" if keyed else "; this request had no Idempotency-Key, so a retry may record it twice"
    return (f"the event log did not take it ({error.why}): not accepted, but it may still be recorded once the "
            f"broker is back, so {retry}: the processor records one outcome per key, so the retry returns that "
            f"outcome and never records it twice{unkeyed}")


def outcome_response(reply: dict) -> JSONResponse:
    """A processor's reply as the response; a rejection's status is its code's (`http_status`, which
    replies of older versions carry, is neither used nor shown)."""
    headers = {"Idempotent-Replayed": "true"} if reply.get("replayed") else {}
    status = 200 if reply["status"] == "accepted" else status_of_code(reply["code"])
    return JSONResponse(public(reply), status_code=status, headers=headers)


def public(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k not in PRIVATE}


@router.post("/batch", summary="Send up to RUNLEDGER_BATCH_MAX commands and wait for each one's outcome",
             openapi_extra=BATCH_REQUEST)
async def send_batch(request: Request, principal: Caller, bus: BusDep, settings: SettingsDep,
                     traceparent: Annotated[str | None, Header(description="W3C trace context")] = None,
                     x_correlation_id: Annotated[str | None, Header()] = None) -> JSONResponse:
    """A JSON array of commands, or NDJSON (`Content-Type: application/x-ndjson`, one per line), each
    with its own `idempotency_key`; answered in request order, one outcome per command, each
    with its `index`. A command refused alone does not stop the others. 503 log_unavailable when the log
    took none of them; an item it did not confirm is `pending` with code `log_unavailable`."""
    ndjson = batch_format(request.headers)
    raw = await read_limited(request, settings.max_batch_bytes)
    with telemetry.continued(request.headers):
        items = batch.intake_items(principal, raw, ndjson, most=settings.batch_max, item_bytes=settings.max_body_bytes,
                                   traceparent=telemetry.current_traceparent(), correlation_id=x_correlation_id,
                                   ops_tenant=settings.ops_tenant)
        try:
            replies = iter(await bus.submit_many([item.envelope for item in items if item.envelope is not None]))
        except LogUnavailable as error:
            raise unavailable(error, settings, batch=True) from None
    outcomes = [item_outcome(item, next(replies) if item.envelope is not None else None, settings)
                for item in items]
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("accepted", "rejected", "pending")}
    return JSONResponse({**counts, "items": outcomes})


def batch_format(headers) -> bool:
    """Whether the body is NDJSON (else a JSON array); refuse a batch sent with the Idempotency-Key header."""
    if "idempotency-key" in headers:
        raise Refused(422, "idempotency_key_per_item", "a batch takes no Idempotency-Key header: give each "
                                                       "command its own `idempotency_key` member")
    media = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in ("application/json", batch.NDJSON):
        raise Refused(415, "unsupported_media_type", f"a batch is application/json (an array of commands) or "
                                                     f"{batch.NDJSON} (one command per line), not {media[:80]!r}")
    return media == batch.NDJSON


def item_outcome(item: batch.Item, reply: dict | None, settings) -> dict:
    """One command's outcome as the single-command route answers it, with its index (and key)."""
    known = {"index": item.index, **({"idempotency_key": item.key} if item.key else {})}
    if item.refusal is not None:
        return {**known, **rejection(item.refusal)}
    if isinstance(reply, LogUnavailable):
        return {**known, "status": "pending", "code": "log_unavailable", "command_id": item.envelope["command_id"],
                "reason": unavailable_reason(reply, settings, "the same idempotency_key")}
    if reply is None:
        return {**known, "status": "pending", "code": "outcome_pending", "command_id": item.envelope["command_id"],
                "reason": f"queued, but no outcome arrived within {settings.command_timeout_s}s; send it again "
                          "with the same idempotency_key to get its outcome"}
    return {**known, **public(reply)}


def rejection(error: DomainError) -> dict:
    details = getattr(error, "details", None)
    return {"status": "rejected", "code": error.code, "reason": error.reason,
            **({"details": details} if details is not None else {})}
