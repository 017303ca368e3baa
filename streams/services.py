"""The streams side's services as a route dependency (set on app.state by bootstrap).

Streams import no other side: what a stream needs of the channels read model arrives here,
wired by bootstrap. `Sources` holds the hub, the read model's tables (`ChannelTables`, read by
`ChannelReader`) and the read-your-writes wait before a stream opens (`CatchUp`: the read
models' `wait_for` of the channels model).
"""
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from streams.hub import ChannelHub


class CatchUp(Protocol):
    async def __call__(self, tenant_id: str, min_seq: int | None, wait_ms: int) -> None:
        """Return once the channels read model has applied the tenant's chain up to min_seq (at once
        without one); refuse if it has not within wait_ms, or if the tenant is held there."""


class ChannelTables(Protocol):
    """Where the channels read model lives: `generations.live_on(conn, "channels")` names its schema."""
    pool: AsyncConnectionPool
    generations: Any


@dataclass(frozen=True)
class Sources:
    hub: ChannelHub
    tables: ChannelTables
    catch_up: CatchUp


async def get_sources(request: Request) -> Sources:
    return request.app.state.stream_sources


SourcesDep = Annotated[Sources, Depends(get_sources)]
