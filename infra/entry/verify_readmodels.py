"""`runledger verify-readmodels`: check read models against the chain, print what differs, record the result.

The check runs here when every model asked for is reachable from this process (the PostgreSQL models and
the archive's files under RUNLEDGER_ARCHIVE_DIR, or all of them with a ClickHouse server), and inside the
serving process otherwise (the embedded chdb belongs to it): POST /v1/ops/verifications with an ops
admin token, then its progress until done. Either way, each tenant's result is then recorded on its own
chain: RecordVerification through the API with an auditor token of that tenant minted from
RUNLEDGER_JWT_SECRET (`--no-record`: print only).

Exit 0: every model of every tenant matches the chain (and the results are recorded); 1: a problem was
found, or a result could not be recorded; 2: nothing was verified (no events for a tenant asked for,
an unknown model, the API or a store unreachable).
"""
import asyncio
from typing import Callable

import httpx
from tqdm import tqdm
from uuid_utils.compat import uuid7

from infra.adapters.http.auth import mint
from infra.adapters.settings import Settings
from infra.entry.client import LedgerClient
from projectors.verification import RECORDED, ModelVerdict, Problem, TenantReport

VERIFIER = "runledger-cli:verify-readmodels"
EMBEDDED = frozenset({"audit", "cost"})  # in ClickHouse: chdb by default, which the serving process owns


class Unusable(Exception):
    """Nothing was verified (exit 2)."""


class NotRecorded(Exception):
    """Verified, but the result of a tenant could not be recorded on its chain (exit 1)."""


class Bars:
    """One progress bar per phase (reading a partition, checking a model of a tenant), one after another."""

    def __init__(self, enabled: bool):
        self.enabled, self.what, self.bar = enabled, None, None

    def show(self, what: str, done: int, total: int | None) -> None:
        if not self.enabled or not what:
            return
        if what != self.what:
            self.close()
            self.what, self.bar = what, tqdm(desc=what, total=total, unit="row" if what.startswith("check") else "rec")
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def needs_server(settings: Settings, models: list[str]) -> bool:
    return not settings.clickhouse_url and any(m in EMBEDDED for m in models)


async def direct(settings: Settings, tenants: list[str] | None, models: list[str], wait_s: float,
                 bars: Bars) -> list[TenantReport]:
    from infra.adapters.clickhouse import open_clickhouse
    from infra.adapters.postgres import DatabaseUnavailable, open_pool
    from infra.entry.bootstrap import CLICKHOUSE_PROJECTIONS, POSTGRES_PROJECTIONS
    from projectors.archive import ArchiveProjection
    from projectors.verification_job import AlreadyVerifying, NoEvents, verify
    try:
        pool = await open_pool(settings, max_size=5)  # the lock, a snapshot, the shadow's reads and writes
    except DatabaseUnavailable as error:
        raise Unusable(str(error)) from None
    ch = open_clickhouse(settings.clickhouse_url, settings.chdb_path) if any(m in EMBEDDED for m in models) else None
    try:
        classes = {cls.name: cls for cls in POSTGRES_PROJECTIONS + CLICKHOUSE_PROJECTIONS}
        # the archive's files are only read: it is not opened (opening makes its bookkeeping directories)
        projections = [ArchiveProjection(settings.archive_dir, settings.topic_prefix) if m == "archive"
                       else await classes[m](ch if m in EMBEDDED else pool, settings.topic_prefix).open()
                       for m in models]
        return await verify(settings, pool, projections, tenants, bars.show, wait_s=wait_s)
    except (NoEvents, AlreadyVerifying, LookupError) as error:
        raise Unusable(str(error)) from None
    finally:
        bars.close()
        await pool.close()
        if ch is not None:
            ch.close()


def ops_headers(settings: Settings) -> dict[str, str]:
    token = mint(settings.jwt_secret.get_secret_value(), settings.ops_tenant, VERIFIER, ["admin"],
                 settings.jwt_audience, 3600)
    return {"Authorization": f"Bearer {token}"}


async def via_api(settings: Settings, tenants: list[str] | None, models: list[str], wait_s: float, url: str,
                  bars: Bars) -> list[TenantReport]:
    body = {"tenants": tenants, "models": models, "wait_s": wait_s}
    async with httpx.AsyncClient(base_url=url, headers=ops_headers(settings), timeout=30) as http:
        try:
            started = await http.post("/v1/ops/verifications", json=body)
            if started.status_code != 202:
                raise Unusable(f"the API refused the verification ({started.status_code} "
                               f"{started.json().get('code')}): {started.json().get('reason')}")
            while (job := (await http.get("/v1/ops/verifications")).json())["state"] == "running":
                bars.show(job["phase"], job["done"], job["total"])
                await asyncio.sleep(0.5)
        except httpx.HTTPError as error:
            raise Unusable(f"cannot reach the runledger API at {url} ({type(error).__name__}); the "
                           f"{', '.join(sorted(EMBEDDED & set(models)))} model lives in the embedded engine of "
                           "that process, so start it (or pass --url)") from None
        finally:
            bars.close()
    if job["state"] == "refused":
        raise Unusable(job["error"])
    if job["state"] != "done":
        raise Unusable(f"the verification failed in the server: {job['error']}")
    return [TenantReport.of(r) for r in job["reports"]]


def command_of(report: TenantReport) -> dict:
    """The RecordVerification of a tenant's report: counts per model, the first problems, no content."""
    problems = [{"model": p.model, "table": p.table, "key": p.key, "kind": p.kind, "columns": list(p.columns),
                 "detail": p.detail or None} for p in report.problems()[:RECORDED]]
    return {"type": "RecordVerification", "verification_id": str(uuid7()), "chain_size": report.chain_size,
            "models": {name: v.counts() for name, v in report.models.items()}, "problems": problems}


async def record(settings: Settings, url: str, report: TenantReport) -> int:
    """RecordVerification through the API as an auditor of the tenant; the chain_seq of verification.recorded."""
    token = mint(settings.jwt_secret.get_secret_value(), report.tenant_id, VERIFIER, ["auditor"],
                 settings.jwt_audience, 600)
    body = command_of(report)
    not_yet = f"tenant {report.tenant_id} is verified, but the result is not recorded"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            key = f"verification-{body['verification_id']}"
            outcome = await LedgerClient(http, token).send(body, idempotency_key=key)
    except (httpx.HTTPError, ValueError) as error:
        raise NotRecorded(f"{not_yet}: the API at {url} did not answer ({type(error).__name__}: {error})") from None
    if not outcome.accepted:
        raise NotRecorded(f"{not_yet}: the API refused it ({outcome.status_code} {outcome.body.get('code')}: "
                          f"{outcome.body.get('reason')})")
    return outcome.body["events"][-1]["chain_seq"]


def rebuild(model: str) -> str:
    if model == "archive":  # one generation, rebuilt in place (docs/archive.md); a replay never changes a full file
        return ("move the named files aside, then rebuild the archive in place: stop the projectors, remove "
                ".runledger/<prefix>/partitions under RUNLEDGER_ARCHIVE_DIR, start them")
    return f"runledger projector rebuild {model}"


def fix(problem: Problem, tenant_id: str) -> str:
    if problem.kind == "held":
        return f"fix the cause, then runledger projector resume {problem.model} --tenant {tenant_id}"
    return rebuild(problem.model)


def lines(report: TenantReport, recorded: int | None) -> list[str]:
    """What the CLI prints of one tenant: a summary line, then each problem with where it is and what to do."""
    t, v = report.tenant_id, report.models
    counts = ", ".join(f"{name} {m.rows} rows" for name, m in v.items())
    after = f"; recorded as verification.recorded at chain_seq {recorded}" if recorded is not None else ""
    out = [f"{'OK' if report.ok else 'PROBLEMS'} tenant {t}: chain of {report.chain_size} events; {counts}"
           f"{' match the chain' if report.ok else ''}{after}"]
    if report.chain_problem:
        out.append(f"  chain tenant {t} {report.chain_problem}: the log itself does not verify; "
                   f"run: runledger verify --tenant {t}")
    for name, m in v.items():
        out += [f"  {name} tenant {t} {p.table} {p.place()}: {p.kind}"
                f"{' (' + ', '.join(p.columns) + ')' if p.columns else ''}: {p.detail}; fix: {fix(p, t)}"
                for p in m.problems]
        if m.dropped:
            out.append(f"  {name} tenant {t}: {m.dropped} more problems; fix: {rebuild(name)}")
        out += lag(name, m, report.chain_size)
    return out


def lag(name: str, m: ModelVerdict, size: int) -> list[str]:
    if m.stopped_at is None and m.applied < size:
        return [f"  note: {name} has applied chain_seq 1 to {m.applied} of {size}; the last {size - m.applied} "
                "events are not applied yet (lag) and were not checked"]
    return []


async def run(settings: Settings, tenants: list[str] | None, models: list[str], url: str, record_results: bool,
              wait_s: float, progress: bool, say: Callable[[str], None], warn: Callable[[str], None]) -> int:
    bars = Bars(progress)
    if needs_server(settings, models):
        reports = await via_api(settings, tenants, models, wait_s, url, bars)
    else:
        reports = await direct(settings, tenants, models, wait_s, bars)
    unrecorded = False
    for report in reports:
        seq = None
        if record_results:
            try:
                seq = await record(settings, url, report)
            except NotRecorded as error:
                warn(f"error: {error}")
                unrecorded = True
        for line in lines(report, seq):
            say(line)
    return 1 if unrecorded or not all(r.ok for r in reports) else 0
