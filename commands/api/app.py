"""The HTTP API: commands (authenticate, validate, hand to the log, answer once) and queries."""
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from commands.api import guard, routes_commands
from commands.api.openapi import document_responses
from commands.auth import AuthError, authenticate
from commands.bus import CommandBus
from commands.intake import Refused
from domain.commands import AnyCommand
from infra.adapters.settings import Settings
from projectors.base import Projection
from projectors.jobs import RebuildJobs
from queries.api import routes_approvals, routes_discovery, routes_ops, routes_runs
from queries.discovery import Discovery
from queries.pagination import BadCursor
from queries.readmodels import NotCaughtUp, ReadModels, TenantHeld
from streams import routes as streams_routes
from streams import viewer as streams_viewer
from streams.hub import ChannelHub


def is_stream(scope) -> bool:
    return scope.get("path", "").startswith("/v1/streams/")


# FastAPI's own request spans stay; its per-dependency and per-serialisation spans would double
# the tracing cost of a command, and on an SSE stream it would wrap every frame sent to every
# subscriber (streams are traced from the events they carry, which hold their traceparent).
TELEMETRY = {"operation_spans": False, "exclude": is_stream}


def ops_admin(request: Request) -> bool:
    """Whether the request carries a valid admin token of the ops tenant (health details are theirs)."""
    settings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        principal = authenticate(token.strip(), settings.jwt_secret.get_secret_value(), settings.jwt_audience)
    except AuthError:
        return False
    return principal.tenant_id == settings.ops_tenant and "admin" in principal.roles


def refusal(status: int, code: str, reason: str, details=None) -> JSONResponse:
    body = {"status": "rejected", "code": code, "reason": reason}
    if details is not None:
        body["details"] = details
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def on_refused(_: Request, error: Refused) -> JSONResponse:
        return refusal(error.status, error.code, error.reason, error.details)

    @app.exception_handler(AuthError)
    async def on_auth(_: Request, error: AuthError) -> JSONResponse:
        return refusal(401, error.code, error.reason)

    @app.exception_handler(NotCaughtUp)
    async def on_behind(_: Request, error: NotCaughtUp) -> JSONResponse:
        response = refusal(503, "not_caught_up", str(error),
                           {"read_model": error.projection, "wanted_seq": error.wanted, "applied_seq": error.applied})
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(TenantHeld)
    async def on_held(_: Request, error: TenantHeld) -> JSONResponse:
        return refusal(503, "read_model_held", str(error),
                       {"read_model": error.projection, "held_before_seq": error.chain_seq,
                        "held_since": error.held_at.isoformat()})

    @app.exception_handler(BadCursor)
    async def on_cursor(_: Request, error: BadCursor) -> JSONResponse:
        return refusal(400, "invalid_cursor", str(error))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors()]
        return refusal(422, "invalid_request", "; ".join(f"{d['field']}: {d['problem']}" for d in details), details)


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


def create_app(settings: Settings, read_models: ReadModels, projections: list[Projection],
               discovery: Discovery, hub: ChannelHub, health: Callable[[bool], dict] | None = None) -> FastAPI:
    bus = CommandBus(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await bus.start()
        try:
            yield
        finally:
            await bus.stop()

    app = FastAPI(title="runledger", version="0.1.0", lifespan=lifespan,
                  description="Commands for the runledger system of record.", telemetry=TELEMETRY)
    app.state.settings = settings
    app.state.bus = bus
    app.state.read_models = read_models
    app.state.projections = projections
    app.state.discovery = discovery
    app.state.hub = hub
    app.state.rebuilds = RebuildJobs(settings, projections)
    install_error_handlers(app)
    app.router.dependencies.append(guard.GUARD)  # before the routers: each copies it as it is included
    for router in (routes_commands.router, routes_runs.router, routes_approvals.router,
                   routes_discovery.router, routes_ops.router, streams_viewer.router, streams_routes.router):
        app.include_router(router)
    add_command_schema(app)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> JSONResponse:
        """What runs and what does not, without a token; the reasons only for an admin of the ops tenant."""
        report = {"api": "ok", **(health(ops_admin(request)) if health else {})}
        ok = all(v in ("ok", "degraded") for v in report.values() if isinstance(v, str))
        return JSONResponse(report, status_code=200 if ok else 503)

    return app
