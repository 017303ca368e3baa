"""GET /metrics: the Prometheus page, for an admin token of the operations tenant only.

The series carry tenant ids (approval backlog, budgets, violations), so an anonymous caller or a
customer tenant's token gets 401 or 403, as on every platform-wide ops view. A scraper that
cannot hold a token reads the same page on RUNLEDGER_METRICS_PORT, a listener meant for a
loopback address (docs/operations.md, "Metrics").

A plain `def`: FastAPI runs it on a worker thread, so a scrape (which takes the exposition's lock,
infra/adapters/prometheus.py) never holds up the event loop.
"""
from fastapi import APIRouter, Request
from fastapi.responses import Response

from infra.adapters.http.deps import OpsAdmin

router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
def prometheus_page(_: OpsAdmin, request: Request) -> Response:
    page, content_type = request.app.state.exposition.render(request.headers.get("accept", ""))
    return Response(page, media_type=content_type, headers={"Cache-Control": "no-store"})
