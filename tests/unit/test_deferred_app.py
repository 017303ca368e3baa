"""The API's port while the process waits for PostgreSQL (infra/adapters/http/deferred.py)."""
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from infra.adapters.http.deferred import Deferred


def early_app() -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def readyz():
        return {"status": "down", "from": "early"}
    return app


def full_app(lifespan_seen: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_):
        lifespan_seen.append("started")
        yield
        lifespan_seen.append("stopped")
    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz():
        return {"status": "ok", "from": "full"}

    @app.get("/v1/runs")
    async def runs():
        return {"items": []}
    return app


async def test_health_answers_at_once_other_routes_are_503_starting_until_the_app_is_ready_then_it_serves_all():
    seen: list[str] = []
    deferred = Deferred(early_app(), retry_after_s=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(deferred), base_url="http://d") as http:
        early = (await http.get("/readyz")).json()
        waiting = await http.get("/v1/runs")
        app = full_app(seen)
        await deferred.ready(app)
        later = [(await http.get(path)).json() for path in ("/readyz", "/v1/runs")]
    assert (early, waiting.status_code, waiting.headers["retry-after"], waiting.json()["code"]) == (
        {"status": "down", "from": "early"}, 503, "2", "starting")
    assert waiting.json()["reason"] == ("this process is waiting for PostgreSQL to start serving; retry after 2s "
                                        "(GET /readyz says what is down)")
    assert (later, seen) == ([{"status": "ok", "from": "full"}, {"items": []}], ["started"])
    await deferred.lifespans.aclose()
    assert seen == ["started", "stopped"]
