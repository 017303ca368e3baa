"""`runledger verify-readmodels` as an operator runs it, against a running service on real Kafka, PostgreSQL and chdb.

The service keeps audit and cost in its embedded chdb, so a check of every model runs inside it (the CLI
starts it through the ops API and follows its progress); a check of PostgreSQL models only runs in the
CLI itself. Either way each tenant's result is recorded on its chain with an auditor token and shown by
GET /v1/evidence/verifications to that tenant alone. Damage is named with what to do, and doing it
(`runledger projector rebuild`) makes the model verify again.
"""
import asyncio
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from infra.adapters.http.auth import TENANT_ID
from tests.support import REPO, Service, events, make_settings, token, unique

MODELS = ("audit", "evidence", "channels", "runs", "approvals", "governance", "cost", "archive")


@pytest.fixture(scope="module")
async def api():
    svc = Service(make_settings(retention_min_days_operational=0, retention_min_days_audit=0,
                                retention_sweep_interval_s=0)).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


def auth(tenant: str, *roles: str, subject: str = "agent") -> dict:
    return {"Authorization": f"Bearer {token(tenant, subject, roles or ('operator',))}"}


async def ok(svc, tenant: str, body: dict, *roles: str) -> dict:
    subject = "ann" if roles == ("approver",) else "agent"
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        response = await http.post("/v1/commands", json=body, headers=auth(tenant, *roles, subject=subject))
    assert response.status_code == 200, response.text
    return response.json()


async def get(svc, path: str, tenant: str, *roles: str, **params) -> httpx.Response:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        return await http.get(path, headers=auth(tenant, *(roles or ("auditor",))), params=params)


async def finished_run(svc, tenant: str) -> str:
    """A run with a step, an approval granted and a cost, completed."""
    run = (await ok(svc, tenant, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
    await ok(svc, tenant, {"type": "StartRun", "run_id": run})
    step = (await ok(svc, tenant, {"type": "StartStep", "run_id": run, "kind": "llm", "name": "think"}))["aggregate_id"]
    await ok(svc, tenant, {"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "succeeded"})
    approval = (await ok(svc, tenant, {"type": "RequestApproval", "run_id": run, "action": "go", "risk_tier": "low"}))
    await ok(svc, tenant, {"type": "GrantApproval", "approval_id": approval["aggregate_id"]}, "approver")
    await ok(svc, tenant, {"type": "RecordCost", "run_id": run, "provider": "p", "model": "m", "amount_micros": 5,
                           "currency": "USD"})
    await ok(svc, tenant, {"type": "CompleteRun", "run_id": run})
    return run


def family_events(chain: list[dict], run: str) -> int:
    """How many events of the chain belong to a run's family (the run, its approvals, its costs)."""
    members = {run} | {e["aggregate_id"] for e in chain if e["type"] == "approval.requested"
                       and e["payload"]["run_id"] == run}
    return sum(1 for e in chain if e["aggregate_id"] in members
               or (e["type"] == "budget.cost_recorded" and e["payload"]["run_id"] == run))


async def chain(svc, tenant: str) -> list[dict]:
    return [e for e in await events(svc.settings) if e["tenant_id"] == tenant]


def cli(svc, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.entry.cli", *map(str, args)], cwd=REPO, env=svc.env(),
                          capture_output=True, text=True, timeout=300)


async def verify(svc, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(cli, svc, "verify-readmodels", "--url", svc.url, "--no-progress", *args)


SUMMARY = re.compile(r"OK tenant (?P<tenant>\S+): chain of (?P<size>\d+) events; (?P<counts>.*) match the chain; "
                     r"recorded as verification\.recorded at chain_seq (?P<seq>\d+)")


async def test_a_consistent_tenant_verifies_with_a_sweep_and_its_result_is_on_its_chain_and_shown_to_it_only(api):
    tenant, other = unique("vr-"), unique("vr-")
    swept = await finished_run(api, tenant)
    await finished_run(api, other)
    for record_class in ("operational", "audit"):
        await ok(api, tenant, {"type": "SetRetentionPolicy", "record_class": record_class, "days": 0}, "admin")
    for record_class in ("operational", "audit"):
        await ok(api, tenant, {"type": "SweepRetention", "record_class": record_class}, "admin")
    kept = await finished_run(api, tenant)
    before = await chain(api, tenant)
    assert [e["payload"]["run_ids"] for e in before if e["type"] == "retention.swept"] == [[swept], [swept]]

    # When every model of the tenant is verified (in the service: audit and cost are in its chdb)
    done = await verify(api, "--tenant", tenant)

    # Then it is consistent, with every row counted, and recorded right after the chain it verified
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    summary = SUMMARY.fullmatch(done.stdout.strip())
    assert summary is not None, done.stdout
    counts = dict((name, int(rows)) for name, rows in re.findall(r"(\w+) (\d+) rows", summary["counts"]))
    family = family_events(before, swept)
    assert (summary["tenant"], int(summary["size"]), int(summary["seq"]), list(counts)) == (
        tenant, len(before), len(before) + 1, list(MODELS))
    # (no checkpoint and no full bundle of 256 yet: the archive publishes nothing, and its head says so)
    assert (counts["evidence"], counts["audit"], counts["archive"]) == (len(before), len(before) - family, 0)
    after = await chain(api, tenant)
    recorded = after[len(before)]
    assert (len(after), recorded["type"], recorded["actor"]) == (
        len(before) + 1, "verification.recorded", {"subject": "runledger-cli:verify-readmodels", "roles": ["auditor"]})
    assert recorded["payload"] == {
        "chain_size": len(before), "ok": True, "verified_by": "runledger-cli:verify-readmodels", "problems": [],
        "models": {name: {"rows": counts[name], "missing": 0, "extra": 0, "mismatched": 0, "applied": len(before),
                          "stopped_at": None, "ok": True} for name in MODELS}}

    # and the service's detailed health says when it last verified, and that all was consistent
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        health = (await http.get("/healthz", headers=auth("ops", "admin"))).json()["verification"]
    assert {k: health[k] for k in ("state", "tenants", "models", "consistent")} == {
        "state": "done", "tenants": 1, "models": list(MODELS), "consistent": True}

    # and the tenant's auditors see it; another tenant sees none, and is told of none
    shown = await get(api, "/v1/evidence/verifications", tenant, min_seq=recorded["chain_seq"], wait_ms=10000)
    item = {"verification_id": recorded["aggregate_id"], "chain_seq": recorded["chain_seq"],
            "recorded_at": recorded["recorded_at"], **{k: recorded["payload"][k] for k in (
                "verified_by", "chain_size", "ok", "models", "problems")}}
    assert (shown.status_code, shown.json()) == (200, {"items": [item], "next_cursor": None})
    one = await get(api, f"/v1/evidence/verifications/{recorded['aggregate_id']}", tenant)
    assert (one.status_code, one.json()) == (200, item)
    elsewhere = await get(api, "/v1/evidence/verifications", other)
    assert (elsewhere.status_code, elsewhere.json()) == (200, {"items": [], "next_cursor": None})
    for asked in (recorded["aggregate_id"], str(uuid.uuid4())):
        hidden = await get(api, f"/v1/evidence/verifications/{asked}", other)
        assert (hidden.status_code, hidden.json()) == (404, {"status": "rejected", "code": "not_found",
                                                              "reason": f"no verification {asked} in this tenant"})
    refused = await get(api, "/v1/evidence/verifications", tenant, "operator")
    assert (refused.status_code, refused.json()["code"]) == (403, "missing_role")

    # When it is verified again, the first verification is part of the chain verified, and pages newest first
    again = await verify(api, "--tenant", tenant, "--model", "evidence", "--model", "runs")
    assert (again.returncode, again.stdout.strip()) == (0, (
        f"OK tenant {tenant}: chain of {len(before) + 1} events; evidence {len(before) + 1} rows, runs "
        f"{counts['runs']} rows match the chain; recorded as verification.recorded at chain_seq {len(before) + 2}"))
    first = await get(api, "/v1/evidence/verifications", tenant, limit=1, min_seq=len(before) + 2, wait_ms=10000)
    newest = first.json()["items"]
    assert [(i["chain_seq"], i["chain_size"], sorted(i["models"])) for i in newest] == [
        (len(before) + 2, len(before) + 1, ["evidence", "runs"])]
    rest = await get(api, "/v1/evidence/verifications", tenant, limit=1, cursor=first.json()["next_cursor"])
    assert (rest.json()["items"], rest.json()["next_cursor"]) == ([item], None)
    assert kept != swept


async def live_schema(svc, name: str) -> str:
    from infra.adapters.postgres import open_pool
    pool = await open_pool(svc.settings, max_size=1)
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT active_schema FROM public.runledger_projections WHERE name = %s",
                                            (f"{svc.settings.topic_prefix}:{name}",))).fetchone()
        return row[0]
    finally:
        await pool.close()


async def execute(svc, sql: str, params: tuple) -> None:
    from infra.adapters.postgres import open_pool
    pool = await open_pool(svc.settings, max_size=1)
    try:
        async with pool.connection() as conn:
            await conn.execute(sql, params)
    finally:
        await pool.close()


async def test_a_damaged_row_is_named_with_what_to_do_and_doing_it_makes_the_model_verify(api):
    tenant = unique("vd-")
    run = await finished_run(api, tenant)
    approval = next(e["aggregate_id"] for e in await chain(api, tenant) if e["type"] == "approval.requested")
    size = len(await chain(api, tenant))
    settled = await verify(api, "--tenant", tenant, "--model", "runs", "--model", "approvals", "--no-record")
    assert settled.returncode == 0, settled.stdout

    # Given a run's row dropped and an approval's state changed in the live generations
    await execute(api, f"DELETE FROM {await live_schema(api, 'runs')}.runs WHERE tenant_id = %s", (tenant,))
    await execute(api, f"UPDATE {await live_schema(api, 'approvals')}.approvals SET state = 'denied' "
                       "WHERE tenant_id = %s", (tenant,))

    # When runs and approvals are verified (PostgreSQL only: in the CLI itself)
    found = await verify(api, "--tenant", tenant, "--model", "runs", "--model", "approvals")

    # Then each is named, with the fix, and the result (problems included) is recorded; rows are those read
    # (the run's step, the approval and its vote)
    assert (found.returncode, found.stderr) == (1, "")
    assert found.stdout.splitlines() == [
        f"PROBLEMS tenant {tenant}: chain of {size} events; runs 1 rows, approvals 2 rows; recorded as "
        f"verification.recorded at chain_seq {size + 1}",
        f"  runs tenant {tenant} runs tenant_id {tenant}, run_id {run}: missing: the chain has this row; the read "
        "model does not; fix: runledger projector rebuild runs",
        f"  approvals tenant {tenant} approvals tenant_id {tenant}, approval_id {approval}: mismatched (state): "
        "differs from the chain in state; fix: runledger projector rebuild approvals"]
    recorded = (await chain(api, tenant))[size]
    assert (recorded["payload"]["ok"], recorded["payload"]["models"]["runs"], recorded["payload"]["problems"]) == (
        False, {"rows": 1, "missing": 1, "extra": 0, "mismatched": 0, "applied": size, "stopped_at": None, "ok": False},
        [{"model": "runs", "table": "runs", "key": {"tenant_id": tenant, "run_id": run}, "kind": "missing",
          "columns": [], "detail": "the chain has this row; the read model does not"},
         {"model": "approvals", "table": "approvals", "key": {"tenant_id": tenant, "approval_id": approval},
          "kind": "mismatched", "columns": ["state"], "detail": "differs from the chain in state"}])

    # When the fix is applied, the model verifies again
    for name in ("runs", "approvals"):
        rebuilt = await asyncio.to_thread(cli, api, "projector", "rebuild", name)
        assert rebuilt.returncode == 0, rebuilt.stderr
    fixed = await verify(api, "--tenant", tenant, "--model", "runs", "--model", "approvals", "--no-record")
    assert (fixed.returncode, fixed.stdout.splitlines()[0]) == (
        0, f"OK tenant {tenant}: chain of {size + 1} events; runs 2 rows, approvals 2 rows match the chain")


async def test_bad_input_exits_2_naming_the_problem_and_verifies_nothing(api):
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    topic = api.settings.events_topic
    for args, message in [
            (("--tenant", nobody), f"no events on {topic} for tenant {nobody}; check the tenant id and "
                                   "RUNLEDGER_TOPIC_PREFIX"),
            (("--tenant", nobody, "--model", "runs"), f"no events on {topic} for tenant {nobody}; check the "
                                                       "tenant id and RUNLEDGER_TOPIC_PREFIX"),
            (("--tenant", "t", "--model", "ledger"), "no read model 'ledger'; choose from audit, evidence, channels, "
                                                     "runs, approvals, governance, cost, archive"),
            ((), "name the tenants to verify (--tenant T, repeatable) or pass --all, not both"),
            (("--tenant", "t", "--all"), "name the tenants to verify (--tenant T, repeatable) or pass --all, not both"),
            (("--tenant", "no/such"), f"'no/such' is not a valid tenant id ({TENANT_ID.pattern})")]:
        refused = await verify(api, *args)
        assert (refused.returncode, refused.stderr, refused.stdout) == (2, f"error: {message}\n", ""), args


async def test_all_verifies_every_tenant_on_the_log(api):
    await finished_run(api, unique("va-"))
    tenants = sorted({e["tenant_id"] for e in await events(api.settings)})
    done = await verify(api, "--all", "--model", "evidence", "--no-record")
    assert (done.returncode, done.stderr) == (0, "")
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [f"OK tenant {t}" for t in tenants]
