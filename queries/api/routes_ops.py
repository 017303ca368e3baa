from fastapi import APIRouter, Request

from commands.intake import Refused
from projectors.jobs import AlreadyRebuilding
from queries.api.deps import OpsAdmin
from queries.lag import as_dicts, projector_lag

router = APIRouter(prefix="/v1/ops", tags=["ops"])


@router.get("/projectors", summary="Lag and status of every projector, per partition (platform-wide)")
async def projectors(_: OpsAdmin, request: Request) -> dict:
    report = await projector_lag(request.app.state.settings, request.app.state.projections)
    return {"partitions": as_dicts(report)}


def known(request: Request, name: str) -> None:
    names = sorted(p.name for p in request.app.state.projections)
    if name not in names:
        raise Refused(404, "not_found", f"no projector {name!r}; projectors are {', '.join(names)}")


@router.post("/projectors/{name}/rebuild", status_code=202,
             summary="Rebuild a read model from offset 0 into fresh tables, then swap it in")
async def start_rebuild(name: str, _: OpsAdmin, request: Request) -> dict:
    known(request, name)
    try:
        request.app.state.rebuilds.start(name)
    except AlreadyRebuilding as error:
        raise Refused(409, "rebuild_running", str(error)) from None
    return request.app.state.rebuilds.status(name)


@router.get("/projectors/{name}/rebuild", summary="Progress of the latest rebuild of a read model")
async def rebuild_status(name: str, _: OpsAdmin, request: Request) -> dict:
    known(request, name)
    status = request.app.state.rebuilds.status(name)
    if status is None:
        raise Refused(404, "not_found", f"no rebuild of {name} has run in this process")
    return status
