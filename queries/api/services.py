"""The query side's services as route dependencies (set on app.state by bootstrap)."""
from typing import Annotated

from fastapi import Depends, Request

from projectors.base import Projection
from projectors.jobs import RebuildJobs
from queries.discovery import Discovery
from queries.readmodels import ReadModels


async def get_read_models(request: Request) -> ReadModels:
    return request.app.state.read_models


async def get_discovery(request: Request) -> Discovery:
    return request.app.state.discovery


async def get_projections(request: Request) -> list[Projection]:
    return request.app.state.projections


async def get_rebuilds(request: Request) -> RebuildJobs:
    return request.app.state.rebuilds


ReadModelsDep = Annotated[ReadModels, Depends(get_read_models)]
DiscoveryDep = Annotated[Discovery, Depends(get_discovery)]
ProjectionsDep = Annotated[list[Projection], Depends(get_projections)]
RebuildsDep = Annotated[RebuildJobs, Depends(get_rebuilds)]
