"""Stuck runs: not ended and past the deadline their request recorded, as of the asker's now.

Nothing is appended when a deadline passes: "stuck" is computed from the recorded `deadline_at`
(the request's time plus its `deadline_s`, or the tenant's SetRunDeadline default) and the now of
the query, so two readers asking at the same instant agree, and a rebuilt read model says the same.
domain/run.py `overdue_s` is the same rule, applied where the processor decides a ForceFailRun.

`AS_OF` joins the query's now in as `clock.as_of`: the SQL then needs it once as a parameter,
however often it is used, and it comes before the WHERE clause's own parameters.
"""
import asyncio
import logging
from datetime import datetime

from opentelemetry.metrics import CallbackOptions, Meter, Observation

log = logging.getLogger("runledger.metrics")

AS_OF = "CROSS JOIN (SELECT %s::timestamptz AS as_of) AS clock"
OVERDUE = ("(deadline_at IS NOT NULL AND deadline_at < clock.as_of "
           "AND state NOT IN ('succeeded', 'failed', 'cancelled'))")
STUCK_COLUMNS = (f"deadline_at, {OVERDUE} AS stuck, "
                 f"CASE WHEN {OVERDUE} THEN EXTRACT(EPOCH FROM (clock.as_of - deadline_at))::float8 END AS overdue_s")
STUCK_FILTER = {True: OVERDUE, False: f"NOT {OVERDUE}"}
COUNTS = f"SELECT tenant_id, count(*) AS n FROM {{s}}.runs {AS_OF} WHERE {OVERDUE} GROUP BY tenant_id"


async def stuck_counts(models, now: datetime) -> dict[str, int]:
    """Stuck runs per tenant, platform-wide (for ops and metrics: counts only, no run of anyone's)."""
    return {r["tenant_id"]: r["n"] for r in await models.fetch("runs", COUNTS, (now,))}


class StuckRunMetrics:
    """`runledger.runs.stuck`: each tenant's stuck runs, counted from the runs read model in the background.

    Kept here, beside the rule it counts, rather than in queries/metrics.py: that module's owner can
    register it with the others (`register(meter)`, `refresh_forever(stop)`), as bootstrap does now.
    """

    def __init__(self, models, clock, timeout_s: float = 5.0) -> None:
        self.models, self.clock, self.timeout_s = models, clock, timeout_s
        self.counts: dict[str, int] = {}

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge("runledger.runs.stuck", [self.observe], unit="{run}",
                                      description="runs not ended and past their deadline, per tenant")

    def observe(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"tenant_id": tenant}) for tenant, n in sorted(self.counts.items())]

    async def refresh(self) -> None:
        counts = await stuck_counts(self.models, self.clock())
        self.counts = {**{tenant: 0 for tenant in self.counts}, **counts}  # a tenant that recovers reads 0

    async def refresh_forever(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self.refresh(), self.timeout_s)
            except Exception as error:  # the counts stay as they were
                log.warning("could not count stuck runs: %r", error)
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except asyncio.TimeoutError:
                pass
