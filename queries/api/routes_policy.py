"""Policy envelopes and their history, the active envelope per scope, violations, and simulations of a draft.

Publishing and activating are commands (`PublishPolicy`, `ActivatePolicy` on /v1/commands); these
routes only read, and a simulation appends nothing.
"""
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from domain.policy import PolicyEnvelope
from domain.policy_source import PolicyText
from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import Limit, MinSeq, WaitMs, require
from infra.adapters.http.errors import Refused
from queries.policy import PolicyQueries

router = APIRouter(tags=["policy"])
Auditor = Annotated[Principal, require("auditor", "admin")]
Admin = Annotated[Principal, require("admin")]


async def get_policy(request: Request) -> PolicyQueries:
    return request.app.state.policy


PolicyDep = Annotated[PolicyQueries, Depends(get_policy)]


class Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy_id: str = Field("draft", min_length=1, max_length=200)
    version: str = Field("0.0.0-draft", min_length=1, max_length=200)
    policies: PolicyText
    cedar_schema: PolicyText
    last: int = Field(100, ge=1, le=10000, description="how many of the latest recorded requests to evaluate")


async def caught_up(q: PolicyQueries, tenant_id: str, min_seq: int | None, wait_ms: int) -> None:
    await q.discovery.wait_for(q.discovery.audit, tenant_id, min_seq, wait_ms)


@router.get("/v1/policies", summary="Every policy id with its latest version and where it is active")
async def policies(q: PolicyDep, principal: Auditor, min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await caught_up(q, principal.tenant_id, min_seq, wait_ms)
    return await q.list_policies(principal.tenant_id)


@router.get("/v1/policies/active", summary="The envelope deciding calls in a project and environment")
async def active(q: PolicyDep, principal: Auditor, project: str | None = None, environment: str | None = None,
                 min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await caught_up(q, principal.tenant_id, min_seq, wait_ms)
    return await q.active(principal.tenant_id, project, environment)


@router.get("/v1/policies/{policy_id}/versions", summary="Every published version of a policy, oldest first")
async def versions(policy_id: str, q: PolicyDep, principal: Auditor, min_seq: MinSeq = None,
                   wait_ms: WaitMs = 2000) -> dict:
    await caught_up(q, principal.tenant_id, min_seq, wait_ms)
    found = await q.versions(principal.tenant_id, policy_id)
    if not found:
        raise Refused(404, "not_found", f"no policy {policy_id!r} was published in this tenant")
    return {"policy_id": policy_id, "items": found}


@router.get("/v1/policies/{policy_id}/versions/{version}", summary="One published envelope, policies and schema")
async def version(policy_id: str, version: str, q: PolicyDep, principal: Auditor, min_seq: MinSeq = None,
                  wait_ms: WaitMs = 2000) -> dict:
    await caught_up(q, principal.tenant_id, min_seq, wait_ms)
    found = await q.version(principal.tenant_id, policy_id, version)
    if found is None:
        raise Refused(404, "not_found", f"no version {version!r} of policy {policy_id!r} in this tenant")
    return found


@router.get("/v1/policy-violations", summary="Denied high-risk tool calls, newest first (keyset pagination)")
async def violations(q: PolicyDep, principal: Auditor, limit: Limit = 50, cursor: str | None = None,
                     min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await caught_up(q, principal.tenant_id, min_seq, wait_ms)
    return await q.violations(principal.tenant_id, cursor, limit)


@router.post("/v1/policies/simulate", summary="Evaluate a draft envelope against recorded requests; appends nothing")
async def simulate(draft: Draft, q: PolicyDep, principal: Admin, min_seq: MinSeq = None,
                   wait_ms: WaitMs = 2000) -> dict:
    await caught_up(q, principal.tenant_id, min_seq, wait_ms)
    envelope = PolicyEnvelope(draft.policy_id, draft.version, draft.policies, draft.cedar_schema)
    return await q.simulate(principal.tenant_id, envelope, draft.last)
