"""Projector lag as OpenTelemetry metrics: gauges read the latest lag report, refreshed in the background."""
import asyncio
import logging

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from infra.adapters.settings import Settings
from projectors.base import Projection
from queries.lag import PartitionLag, projector_lag

log = logging.getLogger("runledger.metrics")


class LagMetrics:
    def __init__(self) -> None:
        self.report: list[PartitionLag] = []

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

    async def refresh_forever(self, settings: Settings, projections: list[Projection], stop: asyncio.Event,
                              every_s: float = 5.0) -> None:
        while not stop.is_set():
            try:
                self.report = await projector_lag(settings, projections)
            except Exception as error:
                log.warning("could not measure projector lag: %r", error)
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except asyncio.TimeoutError:
                pass


VIOLATIONS = ("SELECT tenant_id, count() AS n FROM {db}.events FINAL WHERE type = 'tool_call.violation_recorded' "
              "GROUP BY tenant_id")


class ViolationMetrics:
    """Policy violations (denied high-risk tool calls) per tenant, counted from the audit store for ops."""

    def __init__(self, discovery) -> None:
        self.discovery = discovery
        self.counts: dict[str, int] = {}

    def register(self, meter: Meter) -> None:
        meter.create_observable_counter("runledger.policy.violations", [self.violations], unit="{violation}",
                                        description="tool_call.violation_recorded events of the tenant so far")

    def violations(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"tenant_id": tenant}) for tenant, n in sorted(self.counts.items())]

    async def refresh(self) -> None:
        rows = await self.discovery.query(self.discovery.audit, VIOLATIONS, {})
        self.counts = {r["tenant_id"]: r["n"] for r in rows}

    async def refresh_forever(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as error:
                log.warning("could not count policy violations: %r", error)
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except asyncio.TimeoutError:
                pass
