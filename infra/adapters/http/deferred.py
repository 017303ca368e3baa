"""The API's port while its process waits for PostgreSQL at start: health now, the whole app once it is built.

The API's read models, SSE hub and key store need PostgreSQL to be built at all. Rather than not
listening (a load balancer sees a dead process, an operator sees no health), the process serves
this from the start: /livez, /readyz and /healthz answer at once (and name PostgreSQL down), every
other request a 503 `starting` with Retry-After; once the app is built, everything goes to it and
its lifespan (the command bus) starts.
"""
from contextlib import AsyncExitStack

from fastapi.responses import JSONResponse

HEALTH_PATHS = ("/livez", "/readyz", "/healthz")


class Deferred:
    def __init__(self, early, retry_after_s: int, waiting_for: str = "PostgreSQL"):
        """`early`: the health-only app (infra/health/wiring.py health_app)."""
        self.early, self.retry_after_s, self.waiting_for = early, retry_after_s, waiting_for
        self.app = None
        self.lifespans = AsyncExitStack()

    async def ready(self, app) -> None:
        """Start the app's lifespan, then hand it every request from now on."""
        await self.lifespans.enter_async_context(app.router.lifespan_context(app))
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] != "http" or scope.get("path") in HEALTH_PATHS:
            return await self.early(scope, receive, send)
        response = JSONResponse({"status": "rejected", "code": "starting",
                                 "reason": f"this process is waiting for {self.waiting_for} to start serving; "
                                           f"retry after {self.retry_after_s}s (GET /readyz says what is down)"},
                                status_code=503, headers={"Retry-After": str(self.retry_after_s)})
        await response(scope, receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.lifespans.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
