"""Every refusal the API gives, in one shape and mapped to its response in one place.

Commands, queries and streams raise `Refused` (or a subclass) and never build responses
themselves; an AuthError is a 401 with `WWW-Authenticate`, FastAPI's own validation errors a 422
`invalid_request` naming each field.
"""
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from infra.adapters.http.auth import AuthError


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

    @app.exception_handler(AuthError)
    async def on_auth(_: Request, error: AuthError) -> JSONResponse:
        return refusal(401, error.code, error.reason)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors()]
        return refusal(422, "invalid_request", "; ".join(f"{d['field']}: {d['problem']}" for d in details), details)
