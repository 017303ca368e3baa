"""The one FastAPI app: bootstrap hands it each side's routers and services; it adds the shared plumbing.

It imports no side: commands, queries and streams bring their routers, and their services
(the bus, read models, discovery, the streams' sources, rebuild jobs) arrive as `services`, set on
`app.state` for the sides' own dependencies to hand to routes.
"""
from contextlib import asynccontextmanager
from typing import Any, Callable, Protocol

from fastapi import APIRouter, FastAPI
from pydantic import TypeAdapter

from domain.commands import AnyCommand
from infra.adapters.http import guard
from infra.adapters.http.errors import install_error_handlers
from infra.adapters.http.openapi import document_responses
from infra.adapters.settings import Settings
from infra.health import routes as health_routes


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def is_stream(scope) -> bool:
    return scope.get("path", "").startswith("/v1/streams/")


# FastAPI's own request spans stay; its per-dependency and per-serialisation spans would double
# the tracing cost of a command, and on an SSE stream it would wrap every frame sent to every
# subscriber (streams are traced from the events they carry, which hold their traceparent).
TELEMETRY = {"operation_spans": False, "exclude": is_stream}


def add_command_schema(app: FastAPI) -> None:
    original: Callable = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        defs = TypeAdapter(AnyCommand).json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.pop("$defs", {}))
        components["AnyCommand"] = defs
        return document_responses(schema)

    app.openapi = openapi


def create_app(settings: Settings, routers: list[APIRouter], services: dict[str, Any],
               started: list[Service] = (), health: Any = None) -> FastAPI:
    """Assemble the app from the sides' routers; `started` services run for the app's lifetime.

    `health` (infra/health/report.py `Health`) answers /livez, /readyz and /healthz."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for service in started:
            await service.start()
        try:
            yield
        finally:
            for service in reversed(started):
                await service.stop()

    app = FastAPI(title="runledger", version="0.1.0", lifespan=lifespan,
                  description="Commands for the runledger system of record.", telemetry=TELEMETRY)
    app.state.settings = settings
    for name, service in services.items():
        setattr(app.state, name, service)
    install_error_handlers(app)
    app.router.dependencies.append(guard.GUARD)  # before the routers: each copies it as it is included
    for router in routers:
        app.include_router(router)
    if health is not None:
        app.state.health = health
        app.include_router(health_routes.router)
    add_command_schema(app)
    return app
