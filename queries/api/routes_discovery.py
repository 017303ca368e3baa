from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import Instant, Limit, MinSeq, WaitMs, require
from queries.api.services import DiscoveryDep

router = APIRouter(tags=["audit", "cost"])
Auditor = Annotated[Principal, require("auditor", "admin")]
GroupBy = Literal["project", "run", "model", "provider", "day"]
# Every decision a tool call can record (domain/tool_call.py DECISIONS; tests/unit/test_bundle_query.py checks)
Decision = Literal["ALLOW", "DENY", "REQUIRE_APPROVAL", "REQUIRE_STEP_UP", "THROTTLE", "EXTERNAL"]


@router.get("/v1/audit/events", summary="Search every event of the tenant, newest first (keyset pagination)")
async def search(d: DiscoveryDep, principal: Auditor, limit: Limit = 100, actor: str | None = None,
                 type: str | None = None, run_id: str | None = None, tool: str | None = None,
                 decision: Decision | None = None,
                 aggregate_id: str | None = None, tool_call_id: str | None = None, approval_id: str | None = None,
                 since: Instant | None = None, until: Instant | None = None, cursor: str | None = None,
                 time: Annotated[Literal["recorded", "occurred"], Query(
                     description="which instant `since`/`until` bound: recorded_at (runledger's clock) or "
                                 "occurred_at (the client's, where a command stated one)")] = "recorded",
                 min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    """Each item has its `payload` as recorded (sealed content stays sealed, so the row re-hashes) and
    `content`: its sealed or withheld payload members by name, opened for the caller (queries/content.py)."""
    await d.wait_for(d.audit, principal.tenant_id, min_seq, wait_ms)
    filters = {"actor": actor, "type": type, "run_id": run_id, "tool": tool, "decision": decision,
               "aggregate_id": aggregate_id, "tool_call_id": tool_call_id, "approval_id": approval_id}
    return await d.search(principal.tenant_id, filters, since, until, cursor, limit, time)


@router.get("/v1/costs/rollup", summary="Cost totals grouped by project, run, model, provider and/or day")
async def rollup(d: DiscoveryDep, principal: Auditor,
                 group_by: Annotated[list[GroupBy], Query()] = ["project"],
                 since: Instant | None = None, until: Instant | None = None,
                 min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await d.wait_for(d.cost, principal.tenant_id, min_seq, wait_ms)
    return {"group_by": group_by, "items": await d.rollup(principal.tenant_id, list(dict.fromkeys(group_by)), since, until)}


@router.get("/v1/costs/budgets", summary="Each budget's limit and what its current period has used")
async def budgets(d: DiscoveryDep, principal: Auditor, min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await d.wait_for(d.cost, principal.tenant_id, min_seq, wait_ms)
    today = datetime.now(timezone.utc).date().isoformat()
    return {"items": await d.budgets(principal.tenant_id, today)}
