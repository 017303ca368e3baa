import re
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import AfterValidator, BeforeValidator

from commands.api.deps import PrincipalDep
from commands.auth import Principal
from commands.intake import Refused
from queries.readmodels import ReadModels


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


async def get_read_models(request: Request) -> ReadModels:
    return request.app.state.read_models


def require(*roles: str):
    """A dependency that admits only principals holding one of the roles."""
    async def check(principal: PrincipalDep) -> Principal:
        if not set(roles).intersection(principal.roles):
            raise Refused(403, "missing_role", f"this view needs one of the roles {sorted(roles)}")
        return principal
    return Depends(check)


async def require_ops(request: Request, principal: PrincipalDep) -> Principal:
    """Platform-wide views need an admin of the operations tenant, never a customer tenant's token."""
    if principal.tenant_id != request.app.state.settings.ops_tenant or "admin" not in principal.roles:
        raise Refused(403, "ops_only", "platform views need an admin token of the operations tenant")
    return principal


ReadModelsDep = Annotated[ReadModels, Depends(get_read_models)]
Operator = Annotated[Principal, require("operator", "admin")]
ApprovalViewer = Annotated[Principal, require("operator", "admin", "approver")]
OpsAdmin = Annotated[Principal, Depends(require_ops)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
MinSeq = Annotated[int | None, Query(ge=1, description="wait until the read model has applied your "
                                                           "tenant's chain up to this chain_seq")]
WaitMs = Annotated[int, Query(ge=0, le=10000, description="how long to wait for min_seq")]
Instant = Annotated[datetime, BeforeValidator(iso_text), AfterValidator(representable)]
