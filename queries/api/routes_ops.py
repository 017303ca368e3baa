from fastapi import APIRouter, Request

from commands.intake import Refused
from projectors.jobs import AlreadyRebuilding
from queries.api.deps import OpsAdmin
from queries.lag import as_dicts, held_report, projector_lag

router = APIRouter(prefix="/v1/ops", tags=["ops"])


@router.get("/projectors", summary="Lag and status of every projector, per partition (platform-wide)")
async def projectors(_: OpsAdmin, request: Request) -> dict:
    report = await projector_lag(request.app.state.settings, request.app.state.projections)
    return {"partitions": as_dicts(report), "held": await held_report(request.app.state.projections)}


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


@router.post("/projectors/{name}/tenants/{tenant_id}/resume", status_code=202,
             summary="Replay a held tenant from the event it stopped at, once its cause is fixed")
async def resume_tenant(name: str, tenant_id: str, _: OpsAdmin, request: Request) -> dict:
    """The projector owning the tenant's partition replays it between polls; the tenant leaves the
    held list once it has caught up, or stays there with the new reason if it stops again."""
    known(request, name)
    projection = next(p for p in request.app.state.projections if p.name == name)
    if not await projection.request_resume(tenant_id):
        raise Refused(404, "not_held", f"tenant {tenant_id!r} is not held in the {name} read model")
    return {"projector": name, "tenant_id": tenant_id, "resume_requested": True}
