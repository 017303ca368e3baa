from fastapi import APIRouter, Request

from queries.api.deps import OpsAdmin
from queries.lag import as_dicts, projector_lag

router = APIRouter(prefix="/v1/ops", tags=["ops"])


@router.get("/projectors", summary="Lag and status of every projector, per partition (platform-wide)")
async def projectors(_: OpsAdmin, request: Request) -> dict:
    report = await projector_lag(request.app.state.settings, request.app.state.projections)
    return {"partitions": as_dicts(report)}
