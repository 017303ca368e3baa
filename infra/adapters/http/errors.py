"""Every refusal the API gives, in one shape and mapped to its response in one place.

Commands, queries and streams raise `Refused` (or a subclass) or a domain rejection
(`domain.errors.DomainError`, which has a code and no status) and never build responses
themselves. `STATUSES` is the one table from a rejection's code to its HTTP status: a domain
error whose code it does not list takes the status of its class's own code, and a processor's
reply, which has only its code, takes 409 for a code not listed. An AuthError is a 401 with `WWW-Authenticate`,
FastAPI's own validation errors a 422 `invalid_request` naming each field.
"""
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import DomainError, Forbidden, InvalidCommand, Malformed, NotFound
from infra.adapters.http.auth import AuthError

REJECTED = 409  # any other code (invalid_state, version_conflict, budget_exceeded, ...): the state refuses it
STATUSES: dict[str, int] = {
    # each class's own code: the status of every code of that class not listed below
    Malformed.code: 400, Forbidden.code: 403, NotFound.code: 404, InvalidCommand.code: 422,
    # the body cannot be read as one JSON object (commands/intake.py)
    "duplicate_key": 400, "too_deeply_nested": 400,
    # the caller may not send this command
    "missing_role": 403, "system_command": 403, "requester_cannot_approve": 403, "platform_hold": 403,
    "cross_tenant": 403,
    # the command is not valid as sent
    "unknown_command_type": 422, "invalid_text": 422, "invalid_idempotency_key": 422,
    "idempotency_key_reused": 422, "unknown_step": 422, "wrong_run": 422, "wrong_project": 422,
    "wrong_tenant": 422, "retention_below_minimum": 422, "export_job_mismatch": 422,
    # policy envelopes refused at publish (domain/policy_source.py PolicyRejected), and decisions refused
    "policy_version_invalid": 422, "policy_syntax_error": 422, "policy_annotation_invalid": 422,
    "policy_schema_invalid": 422, "policy_unknown_attribute": 422, "policy_schema_violation": 422,
    "policy_schema_mismatch": 422, "policy_too_large": 422, "policy_version_not_greater": 422,
    "policy_digest_mismatch": 422, "policy_not_published": 404, "requester_cannot_decide": 403,
    "requester_unknown": 403, "approvals_below_policy": 422, "approver_role_mismatch": 422,
    "stale_decision": 422, "step_up_kind_mismatch": 422, "step_up_wrong_subject": 422, "step_up_stale": 422,
    # a verification's verdict that contradicts itself or the chain (domain/evidence.py check_verdicts)
    "inconsistent_verification": 422,
    # client time (domain/client_time.py) and batch items (commands/batch.py)
    "invalid_occurred_at": 422, "occurred_at_in_future": 422, "occurred_at_too_old": 422,
    "missing_idempotency_key": 422, "item_too_large": 422,
    # content cannot be sealed right now: try again once the key store or the KEK is back
    "content_storage_unavailable": 503,
    # the event log cannot take the command now (commands/bus.py LogUnavailable): retry with the same key
    "log_unavailable": 503,
    # the processor could not decide the command (a defect of runledger)
    "undecidable": 500,
}


# Codes for the refusals Starlette and FastAPI raise themselves (install_error_handlers' on_http)
HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
              415: "unsupported_media_type"}


def status_of_code(code: str, kind: type[DomainError] = DomainError) -> int:
    """The HTTP status of a rejection's code; one not listed takes that of its class's own code."""
    if code in STATUSES:
        return STATUSES[code]
    return next((STATUSES[k.code] for k in kind.__mro__ if issubclass(k, DomainError) and k.code in STATUSES),
                REJECTED)


def status_of(error: DomainError) -> int:
    return status_of_code(error.code, type(error))


class Refused(Exception):
    """A request answered with a 4xx (or 5xx) and a specific code; `headers` go with the response."""

    def __init__(self, status: int, code: str, reason: str, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.code, self.reason, self.details, self.headers = status, code, reason, details, headers


def refusal(status: int, code: str, reason: str, details: Any = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": "rejected", "code": code, "reason": reason}
    if details is not None:
        body["details"] = details
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def on_refused(_: Request, error: Refused) -> JSONResponse:
        return refusal(error.status, error.code, error.reason, error.details, error.headers)

    @app.exception_handler(DomainError)
    async def on_rejected(_: Request, error: DomainError) -> JSONResponse:
        return refusal(status_of(error), error.code, error.reason, getattr(error, "details", None))

    @app.exception_handler(AuthError)
    async def on_auth(_: Request, error: AuthError) -> JSONResponse:
        return refusal(401, error.code, error.reason)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        """Starlette's and FastAPI's own refusals (an unparsable JSON body, no such route, a method not
        allowed) in the one Rejection shape, so no route answers a body its contract does not describe."""
        code = HTTP_CODES.get(error.status_code, "rejected")
        reason = str(error.detail)
        if code == "invalid_json":
            reason = f"the request body is not valid JSON ({error.detail})"
        return refusal(error.status_code, code, reason, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors()]
        return refusal(422, "invalid_request", "; ".join(f"{d['field']}: {d['problem']}" for d in details), details)
