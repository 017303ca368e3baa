"""Legal holds, retention policies and sweeps: what auditors (and admins) of a tenant may read."""
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request

from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import Limit, MinSeq, WaitMs, require
from infra.adapters.http.errors import Refused
from queries.governance import Governance

router = APIRouter(tags=["governance"])
Auditor = Annotated[Principal, require("auditor", "admin")]


async def get_governance(request: Request) -> Governance:
    return request.app.state.governance


GovernanceDep = Annotated[Governance, Depends(get_governance)]


@router.get("/v1/legal-holds", summary="The tenant's legal holds, newest first (keyset pagination)")
async def list_holds(g: GovernanceDep, principal: Auditor, state: Literal["active", "released"] | None = None,
                     limit: Limit = 50, cursor: str | None = None, min_seq: MinSeq = None,
                     wait_ms: WaitMs = 2000) -> dict:
    await g.models.wait_for("governance", principal.tenant_id, min_seq, wait_ms)
    return await g.list_holds(principal.tenant_id, state, cursor, limit)


@router.get("/v1/legal-holds/{hold_id}", summary="One legal hold: its scope, history and what it keeps per store")
async def get_hold(hold_id: UUID, g: GovernanceDep, principal: Auditor, min_seq: MinSeq = None,
                   wait_ms: WaitMs = 2000) -> dict:
    await g.models.wait_for("governance", principal.tenant_id, min_seq, wait_ms)
    hold = await g.get_hold(principal.tenant_id, str(hold_id))
    if hold is None:
        raise Refused(404, "not_found", f"no legal hold {hold_id} in this tenant")
    return hold


@router.get("/v1/retention/policies", summary="The retention period of each record class (defaults where unset)")
async def policies(g: GovernanceDep, principal: Auditor, min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await g.models.wait_for("governance", principal.tenant_id, min_seq, wait_ms)
    return await g.policies(principal.tenant_id)


@router.get("/v1/retention/sweeps", summary="Every retention sweep and what it removed, newest first")
async def sweeps(g: GovernanceDep, principal: Auditor, limit: Limit = 50, cursor: str | None = None,
                 min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await g.models.wait_for("governance", principal.tenant_id, min_seq, wait_ms)
    return await g.sweeps(principal.tenant_id, cursor, limit)
