"""The read models' gauges a serving process refreshes in the background (queries/metrics.py, queries/stuck.py)."""
import asyncio

from infra.adapters.settings import Settings
from queries.discovery import Discovery
from queries.metrics import Staleness, read_model_gauges
from queries.readmodels import ReadModels, utcnow
from queries.stuck import StuckRunMetrics


def read_model_metrics(settings: Settings, pool, projections: list, meter, stop: asyncio.Event) -> list[asyncio.Task]:
    """The read models' gauges (queries/metrics.py), each refreshed by a task of its own, and their staleness."""
    by_name = {p.name: p for p in projections}
    gauges = read_model_gauges(settings, pool, projections, Discovery(by_name["audit"], by_name["cost"]))
    for gauge in gauges:
        gauge.register(meter)
    Staleness(gauges).register(meter)
    return [asyncio.create_task(g.refresh_forever(stop, settings.metrics_refresh_s), name=f"{g.source}-metrics")
            for g in gauges]


def stuck_run_metrics(settings: Settings, pool, meter, stop: asyncio.Event) -> asyncio.Task:
    """`runledger.runs.stuck` (queries/stuck.py), refreshed like the other read-model gauges."""
    stuck = StuckRunMetrics(ReadModels(pool, settings.topic_prefix), utcnow, settings.metrics_query_timeout_s)
    stuck.register(meter)
    return asyncio.create_task(stuck.refresh_forever(stop, settings.metrics_refresh_s), name="stuck-run-metrics")
