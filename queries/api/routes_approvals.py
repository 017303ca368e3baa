from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from infra.adapters.http.deps import ApprovalViewer, Limit, MinSeq, WaitMs
from infra.adapters.http.errors import Refused
from queries.api.services import ReadModelsDep
from queries.approval_context import with_tool_calls

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
Context = Annotated[bool, Query(description="add each approval's `tool_call`: the tool, its risk tier and the "
                                            "policy decision (decision, policy id and version, reason)")]


@router.get("/pending", summary="The pending approval queue, oldest first")
async def pending(principal: ApprovalViewer, models: ReadModelsDep, limit: Limit = 50,
                  required_role: str | None = None, cursor: str | None = None, context: Context = False,
                  min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await models.wait_for("approvals", principal.tenant_id, min_seq, wait_ms)
    queue = await models.approval_queue(principal.tenant_id, required_role, cursor, limit)
    if context:
        await with_tool_calls(models, principal.tenant_id, queue["items"], min_seq, wait_ms)
    return queue


@router.get("/{approval_id}", summary="One approval with the votes cast so far")
async def get_approval(approval_id: UUID, principal: ApprovalViewer, models: ReadModelsDep, context: Context = False,
                       min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await models.wait_for("approvals", principal.tenant_id, min_seq, wait_ms)
    approval = await models.get_approval(principal.tenant_id, str(approval_id))
    if approval is None:
        raise Refused(404, "not_found", f"no approval {approval_id} in this tenant")
    if context:
        await with_tool_calls(models, principal.tenant_id, [approval], min_seq, wait_ms)
    return approval
