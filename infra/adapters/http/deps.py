"""The dependencies every side's routes share: who calls (Caller), which roles a route needs, settings, paging.

Dependencies are async on purpose: FastAPI runs a plain `def` dependency in a worker thread, which
costs every request a thread hop (and GIL hand-offs) for work that never blocks.
"""
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import AfterValidator, BeforeValidator

from infra.adapters.http.auth import AuthError, Principal, authenticate
from infra.adapters.http.errors import Refused
from infra.adapters.settings import Settings


# What ClickHouse DateTime64(6) can hold; the same window for Postgres keeps every view alike.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2300, 1, 1, tzinfo=timezone.utc)
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def iso_text(value: Any) -> Any:
    """Refuse numbers before pydantic reads them as Unix seconds (`until=0.5` is 1970)."""
    if not isinstance(value, str) or not ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z")
    return value


def representable(value: datetime) -> datetime:
    """An instant every read model can compare with: UTC when no offset is given, 1900 to 2299."""
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not EARLIEST <= value < LATEST:
        raise ValueError("must be from 1900-01-01 to 2299-12-31 (UTC), what ClickHouse can store")
    return value


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def identify(request: Request, access_token: str | None = None) -> Principal:
    """The caller named by the bearer token in the header, or (where a route allows it) in `access_token`."""
    settings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else (access_token or "")
    if not token:
        where = "'Authorization: Bearer <token>'" + (" or ?access_token=" if access_token is not None else "")
        raise AuthError("missing_token", f"send {where}")
    return authenticate(token, settings.jwt_secret.get_secret_value(), settings.jwt_audience)


async def header_caller(request: Request) -> Principal:
    return identify(request)


async def stream_caller(request: Request, access_token: Annotated[str | None, Query(
        description="bearer token, for EventSource clients (which cannot set headers)")] = None) -> Principal:
    return identify(request, access_token if access_token is not None else "")


SettingsDep = Annotated[Settings, Depends(get_settings)]
Caller = Annotated[Principal, Depends(header_caller)]
StreamCaller = Annotated[Principal, Depends(stream_caller)]


def require(*roles: str, caller=header_caller, what: str = "view"):
    """A dependency that admits only callers (header_caller or stream_caller) holding one of the roles."""
    async def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not set(roles).intersection(principal.roles):
            raise Refused(403, "missing_role", f"this {what} needs one of the roles {sorted(roles)}")
        return principal
    return Depends(check)


def is_ops_admin(principal: Principal, settings: Settings) -> bool:
    return principal.tenant_id == settings.ops_tenant and "admin" in principal.roles


async def require_ops(request: Request, principal: Caller) -> Principal:
    """Platform-wide views need an admin of the operations tenant, never a customer tenant's token."""
    if not is_ops_admin(principal, request.app.state.settings):
        raise Refused(403, "ops_only", "platform views need an admin token of the operations tenant")
    return principal


Operator = Annotated[Principal, require("operator", "admin")]
ApprovalViewer = Annotated[Principal, require("operator", "admin", "approver")]
OpsAdmin = Annotated[Principal, Depends(require_ops)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
MinSeq = Annotated[int | None, Query(ge=1, description="wait until the read model has applied your "
                                                           "tenant's chain up to this chain_seq")]
WaitMs = Annotated[int, Query(ge=0, le=10000, description="how long to wait for min_seq")]
Instant = Annotated[datetime, BeforeValidator(iso_text), AfterValidator(representable)]
