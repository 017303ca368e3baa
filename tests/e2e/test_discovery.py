"""Audit/discovery and cost views over HTTP, on the embedded ClickHouse engine."""
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from domain.policy import REQUEST_SCHEMA
from infra.entry.client import LedgerClient
from tests.support import token, unique


def auditor(tenant: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'auditor-1', ('auditor',))}"}


async def send(http, tenant, body, subject="agent", *roles) -> dict:
    outcome = await LedgerClient(http, token(tenant, subject, roles or ("operator",))).send(body)
    assert outcome.accepted, outcome.body
    return outcome.body


@pytest.fixture(scope="module")
async def story(api):
    """One tenant's history: two runs, an ALLOW and a DENY, costs, a budget."""
    tenant, acknowledged = unique("tenant-"), []  # every event summary the outcomes returned
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        async def sent(body, subject="agent", *roles) -> dict:
            outcome = await send(http, tenant, body, subject, *roles)
            acknowledged.extend(outcome["events"])
            return outcome

        await sent({"type": "SetBudget", "project": "p1", "period": "month",
                    "limit_micros": 10_000, "currency": "USD"}, "root", "admin")
        await sent({"type": "PublishPolicy", "policy_id": "pol", "version": "7.0.0", "cedar_schema": REQUEST_SCHEMA,
                    "policies": '@id("search") permit(principal, action, resource) when { context.tool == "search" };'},
                   "root", "admin")
        await sent({"type": "ActivatePolicy", "policy_id": "pol", "version": "7.0.0"}, "root", "admin")
        runs = []
        for agent in ("alpha", "beta"):
            run = (await sent({"type": "RequestRun", "agent_id": agent, "project": "p1"}))["aggregate_id"]
            await sent({"type": "StartRun", "run_id": run})
            runs.append(run)
        calls = {}
        for run, tool in ((runs[0], "search"), (runs[1], "shell")):  # decided by pol@7.0.0: ALLOW, DENY
            call = await sent({"type": "RequestToolCall", "run_id": run, "tool": tool,
                               "risk_tier": "high", "params_digest": "e" * 64})
            calls[call["decision"]["decision"]] = call["aggregate_id"]
        for run, model, amount in ((runs[0], "opus", 1200), (runs[0], "haiku", 300), (runs[1], "opus", 500)):
            await sent({"type": "RecordCost", "run_id": run, "provider": "anthropic", "model": model,
                        "tokens_in": amount, "tokens_out": 1, "amount_micros": amount, "currency": "USD"})
    hashes = {e["chain_seq"]: e["hash"] for e in acknowledged}
    return {"tenant": tenant, "runs": runs, "calls": calls, "seq": max(hashes), "hashes": hashes}


async def test_search_by_type_actor_run_tool_and_decision(http, story):
    t, seq = story["tenant"], story["seq"]

    async def search(**params):
        response = await http.get("/v1/audit/events", params={"min_seq": seq, **params}, headers=auditor(t))
        assert response.status_code == 200, response.text
        return response.json()["items"]
    everything = await search(limit=500)
    assert [e["chain_seq"] for e in everything] == list(range(seq, 0, -1))
    denied = await search(decision="DENY")
    assert [(e["type"], e["tool"], e["run_id"], e["policy_version"]) for e in denied] == [
        ("tool_call.policy_decided", "shell", story["runs"][1], "7.0.0")]
    by_admin = await search(actor="root")
    assert [e["type"] for e in by_admin] == ["policy.activated", "policy.published", "policy.opened",
                                             "budget.limit_set", "budget.opened"]
    assert [e["tool"] for e in await search(type="tool_call.violation_recorded")] == ["shell"]
    run_events = await search(run_id=story["runs"][0])
    assert [(e["chain_seq"], e["type"], e["run_id"]) for e in run_events] == [
        (16, "budget.cost_recorded", story["runs"][0]), (15, "budget.cost_recorded", story["runs"][0]),
        (11, "tool_call.policy_decided", story["runs"][0]), (10, "tool_call.requested", story["runs"][0]),
        (7, "run.started", story["runs"][0]), (6, "run.requested", story["runs"][0])]
    assert [e["aggregate_id"] for e in await search(tool="search", type="tool_call.requested")] == [story["calls"]["ALLOW"]]
    oldest_first = everything[::-1]
    assert {e["chain_seq"]: e["hash"] for e in oldest_first} == story["hashes"]  # what each outcome acknowledged
    assert [e["prev_hash"] for e in oldest_first] == ["0" * 64] + [story["hashes"][s] for s in range(1, seq)]
    assert oldest_first[0]["payload"] == {"project": "p1"}


async def test_search_pages_by_keyset_and_filters_by_time(http, story):
    t, seq, pages, cursor = story["tenant"], story["seq"], [], None
    while True:
        params = {"limit": 4, "min_seq": seq, **({"cursor": cursor} if cursor else {})}
        body = (await http.get("/v1/audit/events", params=params, headers=auditor(t))).json()
        pages.append([e["chain_seq"] for e in body["items"]])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert [s for page in pages for s in page] == list(range(seq, 0, -1)) and max(map(len, pages)) == 4
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert (await http.get("/v1/audit/events", params={"since": future}, headers=auditor(t))).json()["items"] == []


async def test_cost_rollups_and_budget_use(http, story):
    t, seq = story["tenant"], story["seq"]
    by_model = (await http.get("/v1/costs/rollup", params={"group_by": "model", "min_seq": seq}, headers=auditor(t))).json()
    assert [(i["model"], i["amount_micros"], i["entries"]) for i in by_model["items"]] == [("haiku", 300, 1), ("opus", 1700, 2)]
    by_run = (await http.get("/v1/costs/rollup", params=[("group_by", "run"), ("group_by", "model")], headers=auditor(t))).json()
    assert {(i["run"], i["model"]): i["amount_micros"] for i in by_run["items"]} == {
        (story["runs"][0], "opus"): 1200, (story["runs"][0], "haiku"): 300, (story["runs"][1], "opus"): 500}
    day = (await http.get("/v1/costs/rollup", params={"group_by": "day"}, headers=auditor(t))).json()["items"]
    assert [(i["day"], i["amount_micros"], i["currency"]) for i in day] == [
        (datetime.now(timezone.utc).date().isoformat(), 2000, "USD")]
    budgets = (await http.get("/v1/costs/budgets", headers=auditor(t))).json()["items"]
    assert budgets == [{"project": "p1", "period": "month", "limit_micros": 10_000, "currency": "USD", "used_micros": 2000}]


async def test_discovery_is_for_auditors_and_one_tenant_only(http, story):
    other = unique("tenant-")
    operator = {"Authorization": f"Bearer {token(story['tenant'], 'x', ('operator',))}"}
    assert (await http.get("/v1/audit/events", headers=operator)).status_code == 403
    for path, params in (("/v1/audit/events", {}), ("/v1/audit/events", {"run_id": story["runs"][0]}),
                         ("/v1/costs/rollup", {"group_by": "run"}), ("/v1/costs/budgets", {})):
        response = await http.get(path, params=params, headers=auditor(other))
        assert (response.status_code, response.json()["items"]) == (200, []), path
    behind = await http.get("/v1/audit/events", params={"min_seq": 1, "wait_ms": 0}, headers=auditor(other))
    assert behind.json()["details"]["applied_seq"] == 0
    assert (await http.get("/v1/costs/rollup", params={"group_by": "color"}, headers=auditor(story["tenant"]))).status_code == 422
    # The owner's same search finds the run's events: the empty answers above are isolation, not a bad id
    own = await http.get("/v1/audit/events", params={"run_id": story["runs"][0], "min_seq": story["seq"]},
                         headers=auditor(story["tenant"]))
    assert [e["chain_seq"] for e in own.json()["items"]] == [16, 15, 11, 10, 7, 6]


async def test_rebuild_of_the_embedded_audit_model_through_the_cli_changes_nothing_visible(api, http, story):
    import os
    import subprocess
    import sys
    from tests.support import REPO
    t, seq = story["tenant"], story["seq"]
    before = (await http.get("/v1/audit/events", params={"min_seq": seq, "limit": 500}, headers=auditor(t))).json()
    env = {**os.environ, **{k: v for k, v in api.env().items() if k.startswith("RUNLEDGER_")}}
    done = subprocess.run([sys.executable, "-m", "infra.entry.cli", "projector", "rebuild", "audit", "--url", api.url],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rebuilt audit:" in done.stdout and "generation 2 (now live)" in done.stdout
    ops = {"Authorization": f"Bearer {token('ops', 'oncall', ('admin',))}"}
    status = (await http.get("/v1/ops/projectors/audit/rebuild", headers=ops)).json()
    assert (status["state"], status["generation"], status["applied"]) == ("done", 2, seq)
    assert status["done"] == status["total"]
    after = (await http.get("/v1/audit/events", params={"limit": 500}, headers=auditor(t))).json()
    assert after == before
    unknown = await http.post("/v1/ops/projectors/nope/rebuild", headers=ops)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
