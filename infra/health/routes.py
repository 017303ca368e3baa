"""/livez, /readyz and /healthz: no token needed; reasons (which may quote an error or an event) for ops only."""
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from infra.adapters.http.auth import AuthError
from infra.adapters.http.deps import identify, is_ops_admin
from infra.adapters.http.errors import Refused
from infra.health.report import Health

router = APIRouter(tags=["ops"])
Role = Literal["api", "processor", "projectors"]
Detail = Annotated[bool | None, Query(description="with an admin token of the ops tenant: why each part is as it "
                                                  "is (the default for that token); ignored for anyone else")]


def ops_admin(request: Request) -> bool:
    """Whether the request carries a valid admin token of the ops tenant."""
    try:
        return is_ops_admin(identify(request), request.app.state.settings)
    except AuthError:
        return False


def detailed(request: Request, detail: bool | None) -> bool:
    return detail is not False and ops_admin(request)


def health_of(request: Request) -> Health:
    return request.app.state.health


@router.get("/livez", summary="Whether this process's event loops answer (no dependency is touched)")
async def livez(request: Request) -> JSONResponse:
    status, body = await health_of(request).live()
    return JSONResponse(body, status_code=status)


@router.get("/readyz", summary="What this process (or one of its roles) can serve now: 503 when nothing")
async def readyz(request: Request, detail: Detail = None,
                 role: Annotated[Role | None, Query(description="judge this role only")] = None) -> JSONResponse:
    health = health_of(request)
    if role is not None and role not in health.roles.names:
        raise Refused(404, "not_found", f"this process runs no {role} role; it runs {', '.join(health.roles.names)}")
    status, body = await health.ready(detailed(request, detail), role)
    return JSONResponse(body, status_code=status)


@router.get("/healthz", summary="Every role's parts, dependencies and what works: 503 unless all are ok or degraded")
async def healthz(request: Request, detail: Detail = None) -> JSONResponse:
    status, body = await health_of(request).report(detailed(request, detail))
    return JSONResponse(body, status_code=status)
