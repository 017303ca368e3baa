from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from commands.api.services import BusDep
from commands.bus import OutcomePending
from commands.intake import command_envelope
from infra.adapters import telemetry
from infra.adapters.http.deps import Caller, SettingsDep
from infra.adapters.http.errors import Refused, status_of_code

router = APIRouter(prefix="/v1/commands", tags=["commands"])

EXAMPLE = {"type": "RequestRun", "agent_id": "support-bot", "project": "helpdesk"}


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
    except OutcomePending:
        raise Refused(504, "outcome_pending",
                      f"command {command['command_id']} was queued but no outcome arrived within "
                      f"{settings.command_timeout_s}s; retry with the same Idempotency-Key to get "
                      f"its outcome") from None
    return outcome_response(reply)


def outcome_response(reply: dict) -> JSONResponse:
    """A processor's reply as the response; a rejection's status is its code's (`http_status`, which
    replies of older versions carry, is neither used nor shown)."""
    headers = {"Idempotent-Replayed": "true"} if reply.get("replayed") else {}
    body = {k: v for k, v in reply.items()
            if k not in ("request_digest", "idempotency_key", "http_status", "tenant_id")}
    status = 200 if reply["status"] == "accepted" else status_of_code(reply["code"])
    return JSONResponse(body, status_code=status, headers=headers)
