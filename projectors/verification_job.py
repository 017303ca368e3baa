"""Verify read models against the chain: every tenant asked for (or all), every model asked for.

The chains are read from the events topic first (projectors/verification_chain.py). Then, tenant by
tenant and model by model: wait (up to `wait_s`) for the model to apply the tenant's chain as read,
take one look (projectors/verification_checks.py, projectors/verification_shadow.py,
projectors/verification_archive.py) and, if it finds a problem, a second, independent look, whose
verdict stands: a problem seen twice is the store's, one seen once was a poll landing during the first
look (ClickHouse and the archive's files have no snapshots). One
verification runs at a time per deployment (a PostgreSQL advisory lock): they share generation 0.

`VerificationJobs` runs one inside the serving process, for models that live in its embedded chdb.
"""
import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import AsyncIterator

from infra.adapters.eventlog import EventLog
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.settings import Settings
from projectors.base import Projection
from projectors.ch import ClickHouseProjection
from projectors.verification import ModelVerdict, TenantReport
from projectors.verification_archive import ArchiveCheck
from projectors.verification_chain import Chains, Progress, TenantChain
from projectors.verification_checks import AuditCheck, ChannelsCheck, Check, EvidenceCheck
from projectors.verification_shadow import ChShadowCheck, PgShadowCheck

log = logging.getLogger("runledger.verification")
MODELS = ("audit", "evidence", "channels", "runs", "approvals", "governance", "cost", "archive")  # those it checks
CHECKS: dict[str, type[Check]] = {"audit": AuditCheck, "evidence": EvidenceCheck, "channels": ChannelsCheck,
                                  "archive": ArchiveCheck}
LOOKS = 2


class AlreadyVerifying(Exception):
    """Another verification of this deployment is running."""


class NoEvents(Exception):
    """A tenant asked for has no event on the chain (whether it exists or not): nothing was verified."""

    def __init__(self, tenants: list[str], topic: str):
        self.tenants = tenants
        names = ", ".join(tenants)
        super().__init__(f"no events on {topic} for tenant{'s' if len(tenants) > 1 else ''} {names}; "
                         "check the tenant id and RUNLEDGER_TOPIC_PREFIX" if tenants else
                         f"no tenant has events on {topic}; check RUNLEDGER_TOPIC_PREFIX")


def check_for(live: Projection, chains: Chains, settings: Settings) -> Check:
    cls = CHECKS.get(live.name) or (ChShadowCheck if isinstance(live, ClickHouseProjection) else PgShadowCheck)
    check = cls(live, chains, settings.partitions)
    if isinstance(check, ChannelsCheck):
        check.retain = settings.sse_retain
    return check


@asynccontextmanager
async def exclusive(pool, prefix: str) -> AsyncIterator[None]:
    """Hold the deployment's verification lock (a session advisory lock) while the block runs."""
    key = f"runledger:verification:{prefix}"
    async with pool.connection() as conn:
        taken = await (await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))).fetchone()
        await conn.commit()
        if not taken[0]:
            raise AlreadyVerifying("another verification of this deployment is running; try again when it ends")
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
            await conn.commit()


async def verify(settings: Settings, pool, projections: list[Projection], tenants: list[str] | None,
                 progress: Progress | None = None, log_: EventLog | None = None,
                 wait_s: float = 30.0) -> list[TenantReport]:
    """Verify each projection (opened on the live generation) for each tenant (None: every tenant on the log)."""
    async with exclusive(pool, settings.topic_prefix):
        chains = Chains(log_ or KafkaLog(settings), settings.events_topic, tenants)
        checks = [check_for(p, chains, settings) for p in projections]
        try:
            await chains.extend(progress)
            names = chains.tenants()
            missing = [t for t in names if chains.get(t) is None]
            if missing or not names:
                raise NoEvents(missing, settings.events_topic)
            return [await verify_tenant(chains.get(t), checks, progress, wait_s) for t in names]
        finally:
            for check in checks:
                await check.close()
            chains.close()


async def verify_tenant(chain: TenantChain, checks: list[Check], progress: Progress | None,
                        wait_s: float) -> TenantReport:
    report = TenantReport(chain.tenant_id, chain.size)
    if chain.broken:
        report.chain_problem = f"chain_seq {chain.broken[0]}: {chain.broken[1]}"
    for check in checks:
        report.models[check.name] = await verify_model(check, chain, progress, wait_s)
    report.chain_size = chain.size  # read further where a model was found ahead of the first read
    return report


async def verify_model(check: Check, chain: TenantChain, progress: Progress | None, wait_s: float) -> ModelVerdict:
    what = f"checking {check.name} of {chain.tenant_id}"
    await caught_up(check, chain, wait_s)
    for _ in range(LOOKS):
        verdict = ModelVerdict(check.name, tick=(lambda rows: progress(what, rows, None)) if progress else None)
        await check.verify(chain, verdict)
        if verdict.ok:
            break
        log.info("verification of %s for tenant %s found %d problems", check.name, chain.tenant_id,
                    len(verdict.problems) + verdict.dropped)
    if progress:
        progress(what, verdict.rows, verdict.rows)
    return verdict


async def caught_up(check: Check, chain: TenantChain, wait_s: float) -> None:
    """Wait until the model has applied the chain as read, holds the tenant, or wait_s has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        cut = await check.head(chain.tenant_id)
        if cut.applied >= chain.size or cut.held_at is not None or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.1)


@dataclass
class VerificationJob:
    tenants: list[str] | None
    models: list[str]
    wait_s: float = 30.0
    state: str = "running"  # running | done | refused | failed
    phase: str = ""
    done: int = 0
    total: int | None = None
    reports: list[dict] = field(default_factory=list)
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    finished_at: str | None = None

    def progress(self, phase: str, done: int, total: int | None) -> None:
        self.phase, self.done, self.total = phase, done, total


class VerificationJobs:
    """Verifications run inside the serving process (needed where chdb, which one process owns, holds a model)."""

    def __init__(self, settings: Settings, pool, projections: list[Projection]):
        self.settings, self.pool = settings, pool
        self.projections = {p.name: p for p in projections}
        self.job: VerificationJob | None = None
        self.tasks: set[asyncio.Task] = set()

    def start(self, tenants: list[str] | None, models: list[str], wait_s: float = 30.0) -> VerificationJob:
        if self.job and self.job.state == "running":
            raise AlreadyVerifying(f"a verification is already running (started {self.job.started_at})")
        job = self.job = VerificationJob(tenants, models, wait_s)
        task = asyncio.create_task(self.run(job), name="verification")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def run(self, job: VerificationJob) -> None:
        try:
            reports = await verify(self.settings, self.pool, [self.projections[m] for m in job.models], job.tenants,
                                   job.progress, wait_s=job.wait_s)
            job.reports, job.state = [r.as_dict() for r in reports], "done"
        except (NoEvents, AlreadyVerifying) as error:
            job.state, job.error = "refused", str(error)
        except Exception as error:
            log.exception("verification failed")
            job.state, job.error = "failed", f"{type(error).__name__}: {error}"
        job.finished_at = datetime.now(timezone.utc).isoformat()

    def status(self) -> dict | None:
        return asdict(self.job) if self.job else None

    def health(self, detail: bool) -> dict:
        """The latest verification in this process, for the detailed health report: when, and whether all was well."""
        job = self.job
        if not detail or job is None:
            return {}
        consistent = None if job.state != "done" else all(
            r["chain_problem"] is None and all(m["ok"] for m in r["models"].values()) for r in job.reports)
        return {"verification": {"state": job.state, "started_at": job.started_at, "finished_at": job.finished_at,
                                 "tenants": len(job.reports), "models": job.models, "consistent": consistent}}
