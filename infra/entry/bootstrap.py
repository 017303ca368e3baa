"""The one place that builds settings, clients, the processor, projectors and the API."""
import asyncio
import logging
import signal
from contextlib import asynccontextmanager
from functools import partial

import uvicorn

from commands.api import routes_commands
from commands.bus import CommandBus
from commands.processor import CommandProcessor
from infra.adapters.clickhouse import open_clickhouse
from infra.adapters.eventlog.confluent import processor_log
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.http.app import create_app
from infra.adapters.http.deferred import Deferred
from infra.adapters.keys import Content, data_keys_table, keks_from_settings
from infra.adapters.keys.postgres import PostgresKeyStore
from infra.adapters.postgres import open_pool
from infra.adapters.settings import Settings
from infra.adapters import logs
from infra.adapters.meters import projector_meters
from infra.adapters.prometheus import process_exposition
from infra.adapters.probes import down_reason
from infra.adapters.telemetry import setup_metrics, setup_tracing
from infra.health.report import Health, Roles
from infra.health.legacy import health
from infra.health.wiring import build_health, health_app
from infra.entry.dumps import dump_on_signals, exit_if_stuck
from infra.entry.loops import on_own_loop
from infra.entry.patience import PATIENCE, quiet_connect_errors, stoppable, until_stopped, with_postgres
from infra.entry.gauges import read_model_metrics, stuck_run_metrics
from projectors.approvals import ApprovalsProjection
from projectors.archive import ArchiveProjection
from projectors.channels import ChannelsProjection
from projectors.audit import AuditProjection
from projectors.cost import CostProjection
from projectors.evidence import EvidenceProjection
from projectors.governance import GovernanceProjection
from projectors.jobs import RebuildJobs
from queries.metrics import RebuildProgress
from projectors.runner import ProjectorRunner
from projectors.runs import RunsProjection
from queries.api import routes_verification
from queries.api import (routes_approvals, routes_discovery, routes_evidence, routes_governance, routes_ops,
                         routes_runs)
from queries.api import routes_metrics, routes_policy
from queries.console import routes as console_routes
from queries.policy import PolicyQueries
from queries.discovery import Discovery
from queries.evidence import Evidence
from queries.governance import Governance
from queries.readmodels import ReadModels
from streams import routes as streams_routes
from streams import viewer as streams_viewer
from streams.hub import ChannelHub
from streams.services import Sources

POSTGRES_PROJECTIONS = (RunsProjection, ApprovalsProjection, ChannelsProjection, GovernanceProjection,
                        EvidenceProjection)
CLICKHOUSE_PROJECTIONS = (AuditProjection, CostProjection)
PROJECTOR_STORES = {**{cls.name: "postgres" for cls in POSTGRES_PROJECTIONS},  # what health says each needs
                    **{cls.name: "clickhouse" for cls in CLICKHOUSE_PROJECTIONS}, ArchiveProjection.name: None}
ROUTERS = (routes_commands.router, routes_runs.router, routes_approvals.router, routes_discovery.router,
           routes_governance.router, routes_evidence.router, routes_ops.router, streams_viewer.router, streams_routes.router,
           routes_policy.router, console_routes.router, routes_metrics.router)


class MissingSetting(Exception):
    """A setting a role needs is not set."""


def configure_logging(settings: Settings | None = None, level: str = "INFO") -> None:
    """Every role logs through one handler: JSON lines, or text at a terminal (RUNLEDGER_LOG_FORMAT); secrets scrubbed."""
    logs.configure(settings.log_format if settings else "auto", level, secrets_of(settings) if settings else ())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    quiet_connect_errors()  # a broker waited for: one connect error per address and 30 s, not one per attempt


def secrets_of(settings: Settings) -> list[str]:
    held = [settings.jwt_secret, settings.kek, settings.signing_key, *settings.previous_keks.values()]
    return [secret.get_secret_value() for secret in held if secret is not None]


def build_settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set stop, and from the first one the process has STOP_DEADLINE_S to end (dumps.py)."""
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        if not stop.is_set():
            exit_if_stuck()
        stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping)


async def set_up_projections(settings: Settings, pool, ch) -> list:
    """The read models, opened (tables created): waited for if PostgreSQL goes away after the pool opened."""
    return await with_postgres(lambda: build_projections(settings, pool, ch))


async def build_projections(settings: Settings, pool, ch) -> list:
    projections = ([await cls(pool, settings.topic_prefix).open() for cls in POSTGRES_PROJECTIONS]
                   + [await cls(ch, settings.topic_prefix).open() for cls in CLICKHOUSE_PROJECTIONS])
    projections.append(await ArchiveProjection(settings.archive_dir, settings.topic_prefix).open())  # files, docs/archive.md
    for projection in projections:
        if isinstance(projection, ChannelsProjection):
            projection.retain = settings.sse_retain
    return projections


async def serve(settings: Settings, api: bool = True, processor: bool = True,
                projectors: bool = True) -> None:
    """Run the chosen roles in this process until SIGINT/SIGTERM.

    A broker or PostgreSQL down at start is waited for (infra/entry/patience.py), health served meanwhile."""
    if processor and settings.signing_key is None:
        raise MissingSetting("RUNLEDGER_SIGNING_KEY is required by the processor role: it signs each tenant's "
                             "checkpoints (base64 of 32 random bytes: `python -c 'import base64,os;"
                             "print(base64.b64encode(os.urandom(32)).decode())'`)")
    setup_tracing("runledger", console=settings.otel_console)
    exposition = process_exposition()  # GET /metrics, and RUNLEDGER_METRICS_PORT if set
    meter = setup_metrics("runledger", console=settings.otel_console, readers=(exposition.reader,))
    if settings.metrics_port is not None:
        exposition.listen(settings.metrics_host, settings.metrics_port)
    stop = asyncio.Event()
    stop_on_signals(stop)
    ch = open_clickhouse(settings.clickhouse_url, settings.chdb_path) if (api or projectors) else None
    tasks, runners = [], []
    command_processor = (CommandProcessor(settings, log_=processor_log(settings, PATIENCE),
                                          open_keys=key_store_opener(settings)) if processor else None)
    # Each role's event loop, for /livez; the main loop's first role answers on it.
    loops = {("api" if api else "processor" if processor else "projectors"): asyncio.get_running_loop()}
    dump_on_signals(loops)  # kill -USR1 / -USR2: every thread's stack / every task's (infra/entry/dumps.py)
    if command_processor and (api or projectors):
        tasks.append(asyncio.create_task(on_own_loop("processor", stoppable(command_processor.run), stop, loops),
                                         name="processor"))
    elif command_processor:
        tasks.append(asyncio.create_task(stoppable(command_processor.run)(stop), name="processor"))
    # The processor needs PostgreSQL only for the data keys of tenants that store content: judged by the broker.
    roles = Roles(api=api, processor=command_processor, runners=runners, api_building=api,
                  projectors=PROJECTOR_STORES if projectors else {})
    health_ = build_health(settings, roles, loops, ch, partial(health, command_processor, runners))
    deferred = Deferred(health_app(settings, health_), settings.unavailable_retry_after_s) if api else None
    if api or settings.health_port is not None:  # health from the start, while PostgreSQL is waited for
        tasks += serve_api(deferred or health_app(settings, health_), settings, stop,
                           None if api else settings.health_port)
    pool = await until_stopped(stop, open_pool(settings, patience=PATIENCE)) if (api or projectors) else None
    try:
        if pool is not None or not (api or projectors):
            tasks += await until_stopped(stop, start_roles(settings, pool, ch, meter, stop, health_, deferred, runners,
                                                           loops, exposition, projectors)) or []
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION) if tasks else (set(), set())
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception():
                raise task.exception()
    finally:
        exposition.close()
        if pool:
            await pool.close()
        if ch:
            ch.close()


async def start_roles(settings: Settings, pool, ch, meter, stop: asyncio.Event, health_: Health,
                      deferred: Deferred | None, runners: list, loops: dict, exposition,
                      projectors: bool) -> list[asyncio.Task]:
    """The roles that need PostgreSQL, once it answers: the projectors, their gauges, and the API."""
    tasks = []
    projections = await set_up_projections(settings, pool, ch) if pool else []
    keks = keks_from_settings(settings) if deferred is not None else None
    keys = PostgresKeyStore(pool, *keks, table=data_keys_table(settings)) if keks else None
    content = Content(await with_postgres(keys.open)) if keys else None  # both before any task: safe to cancel
    if projectors:
        tasks.append(asyncio.create_task(on_own_loop(
            "projectors", stoppable(lambda local_stop: run_projectors(settings, ch, runners, local_stop)), stop,
            loops), name="projectors"))
        tasks += read_model_metrics(settings, pool, projections, meter, stop)
        tasks.append(stuck_run_metrics(settings, pool, meter, stop))
    if deferred is not None:
        hub = health_.roles.hub = ChannelHub(settings.database_url, pool, settings.topic_prefix, settings.sse_buffer)
        tasks.append(asyncio.create_task(hub.run(stop), name="sse-hub"))
        app = build_app(settings, pool, projections, hub, health_, content)
        app.state.exposition = exposition
        RebuildProgress(app.state.rebuilds).register(meter)
        await deferred.ready(app)
        health_.roles.api_building = False
    return tasks


def key_store_opener(settings: Settings):
    """The processor's data-key store (its own small pool, opened on its own loop); None without a KEK."""
    keks = keks_from_settings(settings)
    if keks is None:
        return None

    @asynccontextmanager
    async def opened():
        pool = await open_pool(settings, max_size=4, patience=PATIENCE)
        try:
            yield await with_postgres(PostgresKeyStore(pool, *keks, table=data_keys_table(settings)).open)
        finally:
            await pool.close()
    return opened


def build_app(settings: Settings, pool, projections: list, hub: ChannelHub, health_: Health,
              content: Content | None = None):
    """The API: every side's routers, and the services their dependencies hand to routes."""
    by_name = {p.name: p for p in projections}
    bus = CommandBus(settings, KafkaLog(settings, PATIENCE), broker_down=down_reason(health_.probes["broker"]))
    read_models = ReadModels(pool, settings.topic_prefix, content)
    discovery = Discovery(by_name["audit"], by_name["cost"], content)
    services = {"bus": bus, "read_models": read_models, "projections": projections, "discovery": discovery,
                "governance": Governance(read_models, discovery), "evidence": Evidence(read_models),
                "policy": PolicyQueries(discovery),
                "stream_sources": Sources(hub, read_models, partial(read_models.wait_for, "channels")),
                "rebuilds": RebuildJobs(settings, projections)}
    services.update(verification_services(settings, pool, projections, discovery))
    health_.legacy.append(services["verification_jobs"].health)
    return create_app(settings, list(ROUTERS) + [routes_verification.router], services, started=[bus],
                      health=health_)


def verification_services(settings: Settings, pool, projections: list, discovery: Discovery) -> dict:
    """Verifications of the read models run here (projectors/verification_job.py) and what tenants recorded."""
    from projectors.verification_job import VerificationJobs
    from queries.verifications import Verifications
    return {"verification_jobs": VerificationJobs(settings, pool, projections),
            "verifications": Verifications(discovery)}


async def run_projectors(settings: Settings, ch, runners: list[ProjectorRunner], stop: asyncio.Event) -> None:
    """Build and run the projectors on their own loop, with its own pool; `runners` is filled for health().

    Each runner is built once, here: a projection holds a pool bound to the loop that opened it.
    """
    pool = await open_pool(settings, patience=PATIENCE)
    try:
        log_ = KafkaLog(settings, PATIENCE)
        runners.extend(ProjectorRunner(settings, p, log_=log_) for p in await set_up_projections(settings, pool, ch))
        for runner in runners:
            runner.on_applied.append(projector_meters().applied)  # runledger.projector.events, .store.duration
        await asyncio.gather(*(r.run(stop) for r in runners))
    finally:
        await pool.close()


def serve_api(app, settings: Settings, stop: asyncio.Event, port: int | None = None) -> list[asyncio.Task]:
    config = uvicorn.Config(app, host=settings.api_host, port=port or settings.api_port,
                            log_level="warning", lifespan="on", log_config=None)  # its lines go through ours
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None

    async def stop_server() -> None:
        await stop.wait()
        server.should_exit = True
    return [asyncio.create_task(server.serve(), name="api"),
            asyncio.create_task(stop_server(), name="api-stopper")]


