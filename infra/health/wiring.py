"""Build a process's Health from its settings and roles, and serve it where there is no API."""
import asyncio
from typing import Callable

from infra.adapters.http.app import create_app
from infra.adapters.probes import Probe, broker_check, clickhouse_check, postgres_check
from infra.adapters.settings import Settings
from infra.health.report import Health, Roles
from projectors.ch import ClickHouseProjection
from projectors.pg import PostgresProjection


def store_of(projection) -> str | None:
    """The dependency a projection writes to (the archive writes files: nothing to probe)."""
    if isinstance(projection, PostgresProjection):
        return "postgres"
    return "clickhouse" if isinstance(projection, ClickHouseProjection) else None


def probes_for(settings: Settings, roles: Roles, ch) -> dict[str, Probe]:
    """A probe of each dependency some role of this process needs."""
    bound = {"timeout_s": settings.health_timeout_s, "cache_s": settings.health_cache_s}
    topics = [settings.commands_topic, settings.events_topic, settings.replies_topic]
    probes = {"broker": Probe("broker", broker_check(settings.kafka_bootstrap, topics, settings.health_timeout_s),
                              **bound)}
    if roles.api or roles.projectors or "postgres" in roles.processor_needs:
        probes["postgres"] = Probe("postgres", postgres_check(settings.database_url, settings.health_timeout_s),
                                   **bound)
    if ch is not None:
        probes["clickhouse"] = Probe("clickhouse", clickhouse_check(ch), **bound)
    return probes


def build_health(settings: Settings, roles: Roles, loops: dict[str, asyncio.AbstractEventLoop], ch,
                 legacy: Callable[[bool], dict]) -> Health:
    return Health(roles, probes_for(settings, roles, ch), loops, settings.health_timeout_s, [legacy])


def health_app(settings: Settings, health: Health):
    """The app a process without the API role serves on RUNLEDGER_HEALTH_PORT: the three health routes only."""
    return create_app(settings, [], {}, health=health)
