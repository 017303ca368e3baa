"""Legal holds, retention and sweeps over real HTTP, Kafka, PostgreSQL and chdb.

The service runs with retention minimums of 0 days, so a run that has ended is already expired
once a tenant's policy says 0 days; the deployment floor itself is proven in the unit layer.
"""
import asyncio
import json
import subprocess
import sys
import uuid

import httpx
import pytest

from domain.policy import REQUEST_SCHEMA
from tests.sse_client import messages
from tests.support import REPO, Service, auth, make_settings, send, unique


@pytest.fixture(scope="module")
async def api():
    svc = Service(make_settings(retention_min_days_operational=0, retention_min_days_audit=0,
                                retention_sweep_interval_s=0)).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


async def ok(http, tenant: str, body: dict, *roles: str, subject: str = "agent") -> dict:
    response = await send(http, tenant, body, *roles, subject=subject)
    assert response.status_code == 200, response.text
    return response.json()


def seq(reply: dict) -> int:
    return reply["events"][-1]["chain_seq"]


WITH_POLICY: set[str] = set()  # tenants whose envelope allows every tool call


async def allow_everything(http, tenant: str) -> None:
    if tenant not in WITH_POLICY:
        await ok(http, tenant, {"type": "PublishPolicy", "policy_id": "p", "version": "1.0.0", "cedar_schema": REQUEST_SCHEMA,
                                "policies": '@id("all") permit(principal, action, resource);'}, "admin")
        await ok(http, tenant, {"type": "ActivatePolicy", "policy_id": "p", "version": "1.0.0"}, "admin")
        WITH_POLICY.add(tenant)


async def finished_run(http, tenant: str, subject: str = "agent") -> tuple[str, int]:
    """A run with a step, an allowed tool call and a cost, then completed: (run id, last chain_seq)."""
    await allow_everything(http, tenant)
    run = (await ok(http, tenant, {"type": "RequestRun", "agent_id": "bot"}, subject=subject))["aggregate_id"]
    await ok(http, tenant, {"type": "StartRun", "run_id": run}, subject=subject)
    step = (await ok(http, tenant, {"type": "StartStep", "run_id": run, "kind": "tool", "name": "look"}))["aggregate_id"]
    await ok(http, tenant, {"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "succeeded"})
    call = await ok(http, tenant, {"type": "RequestToolCall", "run_id": run, "tool": "search", "risk_tier": "low",
                                   "params_digest": "ab" * 32})
    assert call["decision"]["decision"] == "ALLOW"
    await ok(http, tenant, {"type": "RecordCost", "run_id": run, "provider": "openai", "model": "m",
                            "amount_micros": 5, "currency": "USD"})
    return run, seq(await ok(http, tenant, {"type": "CompleteRun", "run_id": run}))


FAMILY_EVENTS = 8  # requested, started, step started/finished, tool requested/decided, cost, succeeded
CHANNEL_ROWS = 2 * FAMILY_EVENTS - 1  # all of them in the tenant channel, all but the cost in the run's


async def read(http, path: str, tenant: str, min_seq: int, *roles: str, **params) -> httpx.Response:
    return await http.get(path, headers=auth(tenant, *(roles or ("admin",))),
                          params={"min_seq": min_seq, "wait_ms": 10000, **params})


async def audit_rows(http, tenant: str, run: str, min_seq: int) -> int:
    response = await read(http, "/v1/audit/events", tenant, min_seq, "auditor", run_id=run, limit=500)
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


async def present(http, tenant: str, run: str, min_seq: int) -> dict[str, int]:
    """How much of a run family each store shows: runs (0/1), audit rows, cost rows."""
    runs = await read(http, f"/v1/runs/{run}", tenant, min_seq, "operator")
    assert runs.status_code in (200, 404), runs.text
    costs = await read(http, "/v1/costs/rollup", tenant, min_seq, "auditor", group_by="run")
    assert costs.status_code == 200, costs.text
    cost_rows = [c for c in costs.json()["items"] if c["run"] == run]
    return {"runs": int(runs.status_code == 200), "audit": await audit_rows(http, tenant, run, min_seq),
            "cost": len(cost_rows)}


async def sweep(http, tenant: str, record_class: str, **extra) -> httpx.Response:
    return await send(http, tenant, {"type": "SweepRetention", "record_class": record_class, **extra}, "admin")


async def zero_days(http, tenant: str) -> int:
    for record_class in ("operational", "audit"):
        reply = await ok(http, tenant, {"type": "SetRetentionPolicy", "record_class": record_class, "days": 0}, "admin")
    return seq(reply)


async def test_hold_then_sweep_keeps_what_is_held_in_every_store_and_release_lets_it_go(http):
    tenant = unique("gov-")
    await zero_days(http, tenant)
    held, _ = await finished_run(http, tenant)
    gone, _ = await finished_run(http, tenant)
    placed = await ok(http, tenant, {"type": "PlaceLegalHold", "matter": "Doe v. Acme", "reason": "litigation",
                                     "scope": {"kind": "run", "run_id": held}}, "admin")
    hold_id = placed["aggregate_id"]
    operational = await sweep(http, tenant, "operational")
    audit = await sweep(http, tenant, "audit")
    assert (operational.status_code, audit.status_code) == (200, 200), (operational.text, audit.text)
    last = seq(audit.json())
    assert await present(http, tenant, held, last) == {"runs": 1, "audit": FAMILY_EVENTS, "cost": 1}
    assert await present(http, tenant, gone, last) == {"runs": 0, "audit": 0, "cost": 0}

    sweeps = (await read(http, "/v1/retention/sweeps", tenant, last, "auditor")).json()["items"]
    assert [(s["record_class"], s["run_ids"], s["counts"], s["kept_by_holds"]) for s in sweeps] == [
        ("audit", [gone], {"runs": 1, "events": FAMILY_EVENTS}, {hold_id: 1}),
        ("operational", [gone], {"runs": 1, "events": FAMILY_EVENTS}, {hold_id: 1})]
    detail = (await read(http, f"/v1/legal-holds/{hold_id}", tenant, last, "auditor")).json()
    assert (detail["state"], detail["matter"], detail["scope"]) == ("active", "Doe v. Acme", {"kind": "run", "run_id": held})
    assert detail["covers"] == {"runs_covered": 1, "runs": 1, "approvals": 0, "channels": CHANNEL_ROWS,
                                "audit": FAMILY_EVENTS, "cost": 1}

    refused = await sweep(http, tenant, "operational")
    assert (refused.status_code, refused.json()["code"]) == (409, "nothing_to_sweep")
    assert hold_id in refused.json()["reason"]
    await ok(http, tenant, {"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "settled"}, "admin")
    again = [await sweep(http, tenant, c) for c in ("operational", "audit")]
    assert [r.status_code for r in again] == [200, 200]
    assert await present(http, tenant, held, seq(again[-1].json())) == {"runs": 0, "audit": 0, "cost": 0}
    history = (await read(http, f"/v1/legal-holds/{hold_id}", tenant, seq(again[-1].json()), "auditor")).json()
    assert [(h["type"], h["reason"]) for h in history["history"]] == [
        ("legal_hold.placed", "litigation"), ("legal_hold.released", "settled")]


async def tenant_channel(api, tenant: str, until_seq: int) -> list[dict]:
    """Replay the tenant channel from the start until the event at chain_seq until_seq."""
    got = []
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        async with http.stream("GET", "/v1/streams/tenant", headers=auth(tenant),
                               params={"last_event_id": "0", "min_seq": until_seq}) as response:
            assert response.status_code == 200
            async for message in messages(response):
                if message.id is None:
                    continue
                got.append(json.loads(message.data))
                if got[-1]["chain_seq"] == until_seq:
                    break
    return got


async def test_a_swept_run_leaves_the_sse_replay_and_the_sweep_itself_is_in_it(api, http):
    tenant = unique("gov-")
    await zero_days(http, tenant)
    kept, _ = await finished_run(http, tenant)
    gone, _ = await finished_run(http, tenant)
    await ok(http, tenant, {"type": "PlaceLegalHold", "matter": "m", "reason": "r",
                            "scope": {"kind": "run", "run_id": kept}}, "admin")
    last = seq((await sweep(http, tenant, "operational")).json())
    replay = await asyncio.wait_for(tenant_channel(api, tenant, last), 30)
    runs_seen = {e["aggregate_id"] for e in replay if e["aggregate_type"] == "run"}
    assert runs_seen == {kept}
    assert [e["type"] for e in replay][-1] == "retention.swept"
    assert [e["chain_seq"] for e in replay] == sorted(e["chain_seq"] for e in replay)


async def test_a_hold_placed_while_sweeps_run_keeps_everything_it_covers(http):
    tenant = unique("gov-")
    await zero_days(http, tenant)
    runs = [(await finished_run(http, tenant, subject=f"agent-{i % 2}"))[0] for i in range(8)]

    async def sweeps() -> list[httpx.Response]:
        done = []
        while True:
            response = await sweep(http, tenant, "operational", limit=1)
            done.append(response)
            if response.status_code != 200:
                return done

    async def place() -> dict:
        await asyncio.sleep(0)
        return await ok(http, tenant, {"type": "PlaceLegalHold", "matter": "m", "reason": "r",
                                       "scope": {"kind": "subject", "subject": "agent-1"}}, "admin")
    done, placed = await asyncio.gather(sweeps(), place())
    hold_seq = seq(placed)
    assert done[-1].json()["code"] == "nothing_to_sweep"
    swept = {}
    for response in done[:-1]:
        swept.update({run: seq(response.json()) for run in await swept_runs(http, tenant, seq(response.json()))})
    covered = set(runs[1::2])
    removed_after_hold = {run for run, at in swept.items() if at > hold_seq}
    assert not removed_after_hold & covered
    assert set(swept) | covered == set(runs)
    last = seq(done[-2].json()) if len(done) > 1 else hold_seq
    for run in covered - set(swept):
        assert (await present(http, tenant, run, max(last, hold_seq)))["runs"] == 1


async def swept_runs(http, tenant: str, at: int) -> list[str]:
    items = (await read(http, "/v1/retention/sweeps", tenant, at, "auditor", limit=500)).json()["items"]
    return [run for item in items if item["chain_seq"] == at for run in item["run_ids"]]


@pytest.mark.parametrize("body,status,code", [
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "galaxy"}}, 422, "invalid_command"),
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r",
      "scope": {"kind": "time_range", "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}},
     422, "invalid_command"),
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "run", "run_id": str(uuid.uuid4())}},
     404, "not_found"),
    ({"type": "ReleaseLegalHold", "hold_id": str(uuid.uuid4()), "reason": "r"}, 404, "not_found"),
    ({"type": "SetRetentionPolicy", "record_class": "operational", "days": -1}, 422, "invalid_command"),
    ({"type": "SweepRetention", "record_class": "operational"}, 409, "nothing_to_sweep"),
])
async def test_bad_governance_input_gets_a_specific_refusal_and_appends_nothing(http, body, status, code):
    tenant = unique("gov-")
    first = seq(await ok(http, tenant, {"type": "RequestRun", "agent_id": "bot"}))
    response = await send(http, tenant, body, "admin")
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    after = seq(await ok(http, tenant, {"type": "RequestRun", "agent_id": "bot"}))
    assert after == first + 1


async def test_roles_and_tenants_each_see_only_what_they_may(http):
    tenant, other = unique("gov-"), unique("gov-")
    run, _ = await finished_run(http, tenant)
    hold = {"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "tenant"}}
    for role in ("operator", "auditor", "approver"):
        response = await send(http, tenant, hold, role)
        assert (response.status_code, response.json()["code"]) == (403, "missing_role")
    placed = await ok(http, tenant, hold, "admin")
    hold_id, at = placed["aggregate_id"], seq(placed)
    assert (await read(http, "/v1/legal-holds", tenant, at, "operator")).status_code == 403
    listed = (await read(http, "/v1/legal-holds", tenant, at, "auditor")).json()["items"]
    assert [h["hold_id"] for h in listed] == [hold_id]
    nothing = await http.get("/v1/legal-holds", headers=auth(other, "auditor"))
    assert (nothing.status_code, nothing.json()["items"]) == (200, [])
    unknown = await http.get(f"/v1/legal-holds/{uuid.uuid4()}", headers=auth(other, "auditor"))
    foreign = await http.get(f"/v1/legal-holds/{hold_id}", headers=auth(other, "auditor"))
    assert (foreign.status_code, foreign.json()["code"]) == (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    release = await send(http, other, {"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "r"}, "admin")
    assert (release.status_code, release.json()["code"]) == (404, "not_found")


async def test_the_sweep_cli_removes_batch_by_batch_and_reports_what_it_did(api, http):
    tenant = unique("gov-")
    await zero_days(http, tenant)
    for _ in range(3):
        await finished_run(http, tenant)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "infra.entry.cli", "retention", "sweep", "--tenant", tenant,
                         "--class", "operational", "--batch", "2", "--url", api.url],
        cwd=REPO, env=api.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"swept operational records of tenant {tenant}: 3 runs, "
                                     f"{3 * FAMILY_EVENTS} events in 2 sweeps")


async def test_a_platform_super_admin_holds_inside_another_tenant(api, http):
    tenant = unique("gov-")
    run, _ = await finished_run(http, tenant)
    ops = api.settings.ops_tenant
    placed = await ok(http, ops, {"type": "PlaceLegalHold", "tenant_id": tenant, "matter": "regulator",
                                  "reason": "inquiry", "scope": {"kind": "tenant"}}, "admin", subject="platform-root")
    listed = (await read(http, "/v1/legal-holds", tenant, seq(placed), "auditor")).json()["items"]
    assert [(h["hold_id"], h["platform"], h["placed_by"]) for h in listed] == [
        (placed["aggregate_id"], True, "platform-root")]
    release = await send(http, tenant, {"type": "ReleaseLegalHold", "hold_id": placed["aggregate_id"],
                                        "reason": "mine"}, "admin")
    assert (release.status_code, release.json()["code"]) == (403, "platform_hold")
    foreign = await send(http, unique("gov-"), {"type": "PlaceLegalHold", "tenant_id": tenant, "matter": "m",
                                                "reason": "r", "scope": {"kind": "tenant"}}, "admin")
    assert (foreign.status_code, foreign.json()["code"]) == (403, "cross_tenant")
