from fastapi import APIRouter

from infra.adapters.http.deps import OpsAdmin, SettingsDep
from infra.adapters.http.errors import Refused
from projectors.base import Projection
from projectors.jobs import AlreadyRebuilding
from queries.api.services import ProjectionsDep, RebuildsDep
from queries.lag import as_dicts, following, held_report, holds_of, projector_lag

router = APIRouter(prefix="/v1/ops", tags=["ops"])


@router.get("/projectors", summary="Lag and status of every projector, per partition (platform-wide)")
async def projectors(_: OpsAdmin, settings: SettingsDep, projections: ProjectionsDep) -> dict:
    holds = await holds_of(projections)
    report = await projector_lag(settings, projections, holds=holds)
    return {"partitions": as_dicts(report), "held": await held_report(projections, holds)}


def known(projections: list[Projection], name: str) -> Projection:
    """The projection called name, or a 404 naming those there are."""
    found = {p.name: p for p in projections}
    if name not in found:
        raise Refused(404, "not_found", f"no projector {name!r}; projectors are {', '.join(sorted(found))}")
    return found[name]


@router.post("/projectors/{name}/rebuild", status_code=202,
             summary="Rebuild a read model from offset 0 into fresh tables, then swap it in")
async def start_rebuild(name: str, _: OpsAdmin, projections: ProjectionsDep, rebuilds: RebuildsDep) -> dict:
    known(projections, name)
    try:
        rebuilds.start(name)
    except AlreadyRebuilding as error:
        raise Refused(409, "rebuild_running", str(error)) from None
    return rebuilds.status(name)


@router.get("/projectors/{name}/rebuild", summary="Progress of the latest rebuild of a read model")
async def rebuild_status(name: str, _: OpsAdmin, projections: ProjectionsDep, rebuilds: RebuildsDep) -> dict:
    known(projections, name)
    status = rebuilds.status(name)
    if status is None:
        raise Refused(404, "not_found", f"no rebuild of {name} has run in this process")
    return status


@router.post("/projectors/{name}/tenants/{tenant_id}/resume", status_code=202,
             summary="Replay a held tenant from the event it stopped at, once its cause is fixed")
async def resume_tenant(name: str, tenant_id: str, _: OpsAdmin, projections: ProjectionsDep) -> dict:
    """The projector owning the tenant's partition replays it between polls; the tenant leaves the
    held list once it has caught up, or stays there with the new reason if it stops again."""
    projection = known(projections, name)
    await following([projection])
    if not await projection.request_resume(tenant_id):
        raise Refused(404, "not_held", f"tenant {tenant_id!r} is not held in the {name} read model")
    return {"projector": name, "tenant_id": tenant_id, "resume_requested": True}
