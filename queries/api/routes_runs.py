from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query

from infra.adapters.http.deps import Instant, Limit, MinSeq, Operator, WaitMs
from infra.adapters.http.errors import Refused
from queries.api.services import ReadModelsDep

router = APIRouter(prefix="/v1/runs", tags=["runs"])
RunState = Literal["requested", "running", "waiting_for_approval", "succeeded", "failed", "cancelled"]


@router.get("", summary="List the tenant's runs, newest first (keyset pagination)")
async def list_runs(principal: Operator, models: ReadModelsDep, limit: Limit = 50,
                    state: RunState | None = None, agent_id: str | None = None,
                    since: Annotated[Instant | None, Query(description="requested at or after")] = None,
                    until: Annotated[Instant | None, Query(description="requested before")] = None,
                    cursor: str | None = None, min_seq: MinSeq = None, wait_ms: WaitMs = 2000,
                    stuck: Annotated[bool | None, Query(description="true: only runs not ended and past their "
                                                        "deadline, as of this request; false: all others")] = None,
                    ) -> dict:
    await models.wait_for("runs", principal.tenant_id, min_seq, wait_ms)
    return await models.list_runs(principal.tenant_id, state, agent_id, since, until, cursor, limit, stuck)


@router.get("/{run_id}", summary="One run with its steps and tool calls")
async def get_run(run_id: UUID, principal: Operator, models: ReadModelsDep,
                  min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    await models.wait_for("runs", principal.tenant_id, min_seq, wait_ms)
    run = await models.get_run(principal.tenant_id, str(run_id))
    if run is None:
        raise Refused(404, "not_found", f"no run {run_id} in this tenant")
    return run
