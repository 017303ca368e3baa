"""Gauges read from the read models for ops: projector lag, approval backlog, budgets, violations, rebuilds.

A scrape never queries a store. Each gauge's values are fetched by a background task every
RUNLEDGER_METRICS_REFRESH_S, each fetch bounded by RUNLEDGER_METRICS_QUERY_TIMEOUT_S, and the
callbacks only read what the last fetch left. A fetch that fails or outlives its timeout leaves
the previous values standing, counts in `runledger.metrics.refresh.failures`, and
`runledger.metrics.refresh.age` keeps growing, so a stale gauge says it is stale. A fetch still
running when the next is due is waited on, never doubled (a thread stuck in chdb stays one thread).
"""
import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from infra.adapters.meters import Attributes
from infra.adapters.settings import Settings
from projectors.base import Projection
from projectors.generations import PostgresGenerations
from queries.lag import PartitionLag, projector_lag

log = logging.getLogger("runledger.metrics")


class Refreshing:
    """Values fetched in the background with a bounded wait; `fetch` stores them, the callbacks read them."""

    source = "values"

    def __init__(self, timeout_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.timeout_s, self.clock = timeout_s, clock
        self.started_at, self.refreshed_at = clock(), None
        self.running: asyncio.Future | None = None
        self.failed: Callable[[str], None] = lambda reason: None

    async def fetch(self) -> None:
        raise NotImplementedError

    async def refresh(self) -> bool:
        """Fetch once (or wait on the fetch still running), at most timeout_s; whether the values are new."""
        if self.running is None or self.running.done():
            if self.running is not None and not self.running.cancelled():
                self.running.exception()  # a late one's outcome is stale now; read it so asyncio does not complain
            self.running = asyncio.ensure_future(self.fetch())
        done, _ = await asyncio.wait({self.running}, timeout=self.timeout_s)
        if not done:
            log.warning("reading %s for metrics took over %ss; its gauges are stale", self.source, self.timeout_s)
            self.failed("timeout")
            return False
        running, self.running = self.running, None
        if running.exception() is not None:
            log.warning("could not read %s for metrics: %r", self.source, running.exception())
            self.failed("error")
            return False
        self.refreshed_at = self.clock()
        return True

    def age(self) -> float:
        """Seconds since the values were last fetched (since start, if never)."""
        return self.clock() - (self.refreshed_at if self.refreshed_at is not None else self.started_at)

    async def refresh_forever(self, stop: asyncio.Event, every_s: float = 10.0) -> None:
        while not stop.is_set():
            await self.refresh()
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except asyncio.TimeoutError:
                pass


class Staleness:
    """How old each refreshed source's values are, and how often a refresh failed."""

    def __init__(self, sources: list[Refreshing]):
        self.sources = sources
        self.attributes = Attributes("source", "reason")

    def register(self, meter: Meter) -> None:
        failures = meter.create_counter("runledger.metrics.refresh.failures", unit="{refresh}",
                                        description="background reads for gauges that failed or timed out")
        for source in self.sources:
            source.failed = lambda reason, s=source.source: failures.add(1, self.attributes(s, reason))
        meter.create_observable_gauge("runledger.metrics.refresh.age", [self.ages], unit="s",
                                      description="seconds since the source's gauges were last read")

    def ages(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(round(s.age(), 3), self.attributes(s.source, None)) for s in self.sources]


class LagMetrics(Refreshing):
    source = "projector_lag"

    def __init__(self, settings: Settings | None = None, projections: list[Projection] = (), **kw):
        super().__init__(**kw)
        self.settings, self.projections = settings, list(projections)
        self.report: list[PartitionLag] = []

    async def fetch(self) -> None:
        self.report = await projector_lag(self.settings, self.projections)

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge("runledger.projector.lag.events", [self.events], unit="{event}",
                                      description="log end offset minus the projector's stored position")
        meter.create_observable_gauge("runledger.projector.lag.seconds", [self.seconds], unit="s",
                                      description="now minus the time of the last applied event, 0 when caught up")
        meter.create_observable_gauge("runledger.projector.held.tenants", [self.held], unit="{tenant}",
                                      description="tenants of the partition held in the read model at an event it "
                                                  "cannot apply")

    def observations(self, value) -> list[Observation]:
        return [Observation(value(r), {"projector": r.projector, "partition": r.partition, "status": r.status})
                for r in self.report]

    def events(self, _: CallbackOptions) -> list[Observation]:
        return self.observations(lambda r: r.lag_events)

    def seconds(self, _: CallbackOptions) -> list[Observation]:
        return self.observations(lambda r: r.lag_seconds)

    def held(self, _: CallbackOptions) -> list[Observation]:
        return self.observations(lambda r: r.held_tenants)


VIOLATIONS = ("SELECT tenant_id, count() AS n FROM {db}.events FINAL WHERE type = 'tool_call.violation_recorded' "
              "GROUP BY tenant_id")


class ViolationMetrics(Refreshing):
    """Policy violations (denied high-risk tool calls) per tenant, counted from the audit store for ops."""

    source = "violations"

    def __init__(self, discovery, **kw) -> None:
        super().__init__(**kw)
        self.discovery = discovery
        self.counts: dict[str, int] = {}

    def register(self, meter: Meter) -> None:
        meter.create_observable_counter("runledger.policy.violations", [self.violations], unit="{violation}",
                                        description="tool_call.violation_recorded events of the tenant so far")

    def violations(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"tenant_id": tenant}) for tenant, n in sorted(self.counts.items())]

    async def fetch(self) -> None:
        rows = await self.discovery.query(self.discovery.audit, VIOLATIONS, {})
        self.counts = {r["tenant_id"]: r["n"] for r in rows}


BACKLOG = ("SELECT tenant_id, required_role, count(*) AS pending, min(requested_at) AS oldest FROM {s}.approvals "
           "WHERE state = 'pending' GROUP BY tenant_id, required_role ORDER BY tenant_id, required_role")


class ApprovalBacklog(Refreshing):
    """Pending approvals per tenant and required role, and how long the oldest has waited (approvals read model)."""

    source = "approvals"

    def __init__(self, pool, topic_prefix: str, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 **kw):
        super().__init__(**kw)
        self.pool, self.generations, self.now = pool, PostgresGenerations(pool, topic_prefix), now
        self.rows: list[dict[str, Any]] = []
        self.attributes = Attributes("tenant_id", "required_role")

    async def fetch(self) -> None:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            live = await self.generations.live_on(conn, "approvals")
            if live is None:
                self.rows = []
                return
            await cur.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(self.timeout_s * 1000)}",))
            await cur.execute(BACKLOG.format(s=live[0]))
            self.rows = [dict(zip(("tenant_id", "required_role", "pending", "oldest"), row))
                         for row in await cur.fetchall()]

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge("runledger.approvals.pending", [self.pending], unit="{approval}",
                                      description="approvals waiting for a decision, by tenant and required role")
        meter.create_observable_gauge("runledger.approvals.oldest.age", [self.oldest], unit="s",
                                      description="how long the oldest pending approval has waited")

    def pending(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(r["pending"], self.attributes(r["tenant_id"], r["required_role"])) for r in self.rows]

    def oldest(self, _: CallbackOptions) -> list[Observation]:
        now = self.now()
        return [Observation(round(max(0.0, (now - r["oldest"]).total_seconds()), 3),
                            self.attributes(r["tenant_id"], r["required_role"])) for r in self.rows]


BUDGETS = """
    SELECT b.tenant_id AS tenant_id, b.project AS project, b.period AS period, b.limit_micros AS limit_micros,
           b.currency AS currency,
           sumIf(c.amount_micros, c.tenant_id != '' AND (b.period = 'total'
                OR (b.period = 'month' AND toStartOfMonth(c.day) = toStartOfMonth(toDate({today:String})))
                OR (b.period = 'day' AND c.day = toDate({today:String})))) AS used_micros
    FROM (SELECT * FROM {db}.budgets FINAL) AS b
    LEFT JOIN (SELECT tenant_id, project, day, amount_micros FROM {db}.cost_entries FINAL) AS c
           ON c.tenant_id = b.tenant_id AND c.project = b.project
    GROUP BY tenant_id, project, period, limit_micros, currency ORDER BY tenant_id, project"""


class BudgetUse(Refreshing):
    """Each budgeted project's spend in its current period, its limit and the share used (cost read model)."""

    source = "budgets"

    def __init__(self, discovery, today: Callable[[], str] = lambda: datetime.now(timezone.utc).date().isoformat(),
                 **kw):
        super().__init__(**kw)
        self.discovery, self.today = discovery, today
        self.rows: list[dict[str, Any]] = []
        self.attributes = Attributes("tenant_id", "project", "period", "currency")

    async def fetch(self) -> None:
        self.rows = await self.discovery.query(self.discovery.cost, BUDGETS, {"today": self.today()})

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge("runledger.budget.spent", [self.spent], unit="{micro_unit}",
                                      description="spent in the budget's current period (micro-units of its currency)")
        meter.create_observable_gauge("runledger.budget.limit", [self.limit], unit="{micro_unit}",
                                      description="the budget's limit per period")
        meter.create_observable_gauge("runledger.budget.utilization", [self.utilization], unit="1",
                                      description="spent / limit in the current period (1 is the whole budget)")

    def observe(self, value) -> list[Observation]:
        return [Observation(value(r), self.attributes(r["tenant_id"], r["project"], r["period"], r["currency"]))
                for r in self.rows]

    def spent(self, _: CallbackOptions) -> list[Observation]:
        return self.observe(lambda r: r["used_micros"])

    def limit(self, _: CallbackOptions) -> list[Observation]:
        return self.observe(lambda r: r["limit_micros"])

    def utilization(self, _: CallbackOptions) -> list[Observation]:
        return self.observe(lambda r: r["used_micros"] / r["limit_micros"] if r["limit_micros"] else 0.0)


class RebuildProgress:
    """The progress of this process's rebuilds (projectors/jobs.py), read from memory."""

    def __init__(self, jobs):
        self.jobs = jobs
        self.attributes = Attributes("projector", "state")

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge("runledger.projector.rebuild.progress", [self.progress], unit="1",
                                      description="share of the log's offsets the latest rebuild has replayed")
        meter.create_observable_gauge("runledger.projector.rebuild.remaining", [self.remaining], unit="{offset}",
                                      description="offsets the latest rebuild has still to replay")

    def latest(self) -> list:
        return sorted(list(self.jobs.jobs.values()), key=lambda job: job.projector)

    def progress(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(1.0 if job.state == "done" else job.done / job.total if job.total else 0.0,
                            self.attributes(job.projector, job.state)) for job in self.latest()]

    def remaining(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(0 if job.state == "done" else max(0, job.total - job.done),
                            self.attributes(job.projector, job.state)) for job in self.latest()]


def read_model_gauges(settings: Settings, pool, projections: list[Projection], discovery) -> list[Refreshing]:
    """Every refreshed gauge of the read models this process holds."""
    bounded = {"timeout_s": settings.metrics_query_timeout_s}
    return [LagMetrics(settings, projections, **bounded), ViolationMetrics(discovery, **bounded),
            ApprovalBacklog(pool, settings.topic_prefix, **bounded), BudgetUse(discovery, **bounded)]
