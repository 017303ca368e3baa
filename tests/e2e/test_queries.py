"""Queries over HTTP: read-your-writes, filters, keyset pages, the approval queue, isolation, lag."""
import uuid


from domain.policy import REQUEST_SCHEMA
from infra.entry.client import LedgerClient
from tests.support import token, unique


def auth(tenant: str, subject: str = "agent", *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, subject, roles or ('operator',))}"}


async def send(http, tenant: str, body: dict, *roles: str, subject: str = "agent") -> dict:
    outcome = await LedgerClient(http, token(tenant, subject, roles or ("operator",))).send(body)
    assert outcome.accepted, outcome.body
    return outcome.body


async def test_a_query_can_wait_for_the_command_it_just_sent(http):
    tenant = unique("tenant-")
    await send(http, tenant, {"type": "SetContentPolicy", "store_content": True}, "admin")  # labels are content
    run = await send(http, tenant, {"type": "RequestRun", "agent_id": "a", "labels": {"team": "x"}})
    seq = run["events"][-1]["chain_seq"]
    response = await http.get(f"/v1/runs/{run['aggregate_id']}", params={"min_seq": seq}, headers=auth(tenant))
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["labels"]) == ("requested", {"team": "x"})
    ahead = await http.get("/v1/runs", params={"min_seq": seq + 50, "wait_ms": 100}, headers=auth(tenant))
    assert (ahead.status_code, ahead.json()["code"]) == (503, "not_caught_up")
    assert ahead.json()["details"] == {"read_model": "runs", "wanted_seq": seq + 50, "applied_seq": seq}


async def test_run_detail_shows_steps_tool_calls_and_totals(http):
    tenant = unique("tenant-")
    run_id = (await send(http, tenant, {"type": "RequestRun", "agent_id": "a"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run_id})
    step = await send(http, tenant, {"type": "StartStep", "run_id": run_id, "kind": "tool", "name": "fetch"})
    await send(http, tenant, {"type": "FinishStep", "run_id": run_id, "step_id": step["aggregate_id"], "outcome": "succeeded"})
    await send(http, tenant, {"type": "PublishPolicy", "policy_id": "p", "version": "9.0.0", "cedar_schema": REQUEST_SCHEMA,
                              "policies": '@id("s") permit(principal, action, resource) when { context.tool == "search" };'},
               "admin")
    await send(http, tenant, {"type": "ActivatePolicy", "policy_id": "p", "version": "9.0.0"}, "admin")
    call = await send(http, tenant, {"type": "RequestToolCall", "run_id": run_id, "tool": "kb", "risk_tier": "low",
                                     "params_digest": "a" * 64, "step_id": step["aggregate_id"]})
    assert (call["decision"]["decision"], call["decision"]["cause"]) == ("DENY", "not_permitted")  # no permit for kb
    last = await send(http, tenant, {"type": "RecordCost", "run_id": run_id, "provider": "x", "model": "m",
                                     "tokens_in": 10, "tokens_out": 3, "amount_micros": 250, "currency": "USD"})
    run = (await http.get(f"/v1/runs/{run_id}", params={"min_seq": last["events"][-1]["chain_seq"]},
                          headers=auth(tenant))).json()
    assert (run["state"], run["step_count"], run["tool_call_count"]) == ("running", 1, 1)
    assert (run["cost_micros"], run["tokens_in"], run["tokens_out"]) == (250, 10, 3)
    assert [(s["name"], s["attempt"], s["outcome"]) for s in run["steps"]] == [("fetch", 1, "succeeded")]
    [tool_call] = run["tool_calls"]
    assert (tool_call["state"], tool_call["decision"], tool_call["policy_version"]) == ("blocked", "DENY", "9.0.0")


async def test_listing_filters_and_pages_without_gaps_or_repeats(http):
    tenant = unique("tenant-")
    ids = []
    for i in range(7):
        body = await send(http, tenant, {"type": "RequestRun", "agent_id": "even" if i % 2 == 0 else "odd"})
        ids.append(body["aggregate_id"])
    last_seq = body["events"][-1]["chain_seq"]
    await send(http, tenant, {"type": "StartRun", "run_id": ids[0]})
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "min_seq": last_seq, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/runs", params=params, headers=auth(tenant))).json()
        seen += [r["run_id"] for r in page["items"]]
        # a run requested while paging lands before the cursor: it must not shift later pages
        await send(http, tenant, {"type": "RequestRun", "agent_id": "late"})
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    odd = (await http.get("/v1/runs", params={"agent_id": "odd", "min_seq": last_seq}, headers=auth(tenant))).json()
    assert sorted(r["run_id"] for r in odd["items"]) == sorted(ids[1::2])
    bad = await http.get("/v1/runs", params={"cursor": "nonsense"}, headers=auth(tenant))
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")


async def test_the_approval_queue_is_oldest_first_and_shows_votes_so_far(http):
    tenant = unique("tenant-")
    await send(http, tenant, {"type": "SetContentPolicy", "store_content": True}, "admin")  # the action is content
    run_id = (await send(http, tenant, {"type": "RequestRun", "agent_id": "a"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run_id})
    first = await send(http, tenant, {"type": "RequestApproval", "run_id": run_id, "action": "a1", "risk_tier": "high",
                                      "required_approvals": 2})
    second = await send(http, tenant, {"type": "RequestApproval", "run_id": run_id, "action": "a2", "risk_tier": "low",
                                       "required_role": "security"})
    vote = await send(http, tenant, {"type": "GrantApproval", "approval_id": first["aggregate_id"]}, "approver", subject="ann")
    seq = vote["events"][-1]["chain_seq"]
    queue = (await http.get("/v1/approvals/pending", params={"min_seq": seq}, headers=auth(tenant, "ann", "approver"))).json()
    assert [a["approval_id"] for a in queue["items"]] == [first["aggregate_id"], second["aggregate_id"]]
    assert queue["items"][0]["approvers"] == ["ann"] and queue["items"][0]["required_approvals"] == 2
    security = (await http.get("/v1/approvals/pending", params={"required_role": "security"},
                               headers=auth(tenant, "ann", "approver"))).json()
    assert [a["action"] for a in security["items"]] == ["a2"]
    detail = (await http.get(f"/v1/approvals/{first['aggregate_id']}", headers=auth(tenant, "ann", "approver"))).json()
    assert [(v["approver"], v["reason"]) for v in detail["votes"]] == [("ann", None)]


async def test_another_tenant_sees_nothing_not_even_existence(http):
    tenant, other = unique("tenant-"), unique("tenant-")
    run = await send(http, tenant, {"type": "RequestRun", "agent_id": "secret-agent"})
    run_id, seq = run["aggregate_id"], run["events"][-1]["chain_seq"]
    assert (await http.get(f"/v1/runs/{run_id}", params={"min_seq": seq}, headers=auth(tenant))).status_code == 200
    intruder = auth(other, "x", "operator", "admin", "approver")
    for path, params in (("/v1/runs", {}), ("/v1/runs", {"agent_id": "secret-agent"}), ("/v1/approvals/pending", {})):
        response = await http.get(path, params=params, headers=intruder)
        assert (response.status_code, response.json()["items"]) == (200, [])
    unknown = str(uuid.uuid4())
    theirs = await http.get(f"/v1/runs/{run_id}", headers=intruder)
    nobodys = await http.get(f"/v1/runs/{unknown}", headers=intruder)
    assert theirs.status_code == nobodys.status_code == 404
    assert theirs.text.replace(run_id, "ID") == nobodys.text.replace(unknown, "ID")
    assert tenant not in theirs.text and "secret-agent" not in theirs.text
    ahead = await http.get("/v1/runs", params={"min_seq": seq, "wait_ms": 0}, headers=auth(other))
    assert ahead.json()["details"]["applied_seq"] == 0


async def test_views_are_gated_by_role(http):
    tenant = unique("tenant-")
    for path, roles, status in (("/v1/runs", ("auditor",), 403), ("/v1/runs", ("approver",), 403),
                                ("/v1/approvals/pending", ("approver",), 200), ("/v1/ops/projectors", ("admin",), 403)):
        response = await http.get(path, headers=auth(tenant, "x", *roles))
        assert response.status_code == status, (path, roles, response.text)


async def test_ops_sees_lag_per_projector_and_partition(api, http):
    tenant = unique("tenant-")
    body = await send(http, tenant, {"type": "RequestRun", "agent_id": "a"})
    await http.get("/v1/runs", params={"min_seq": body["events"][-1]["chain_seq"]}, headers=auth(tenant))
    response = await http.get("/v1/ops/projectors", headers=auth("ops", "oncall", "admin"))
    rows = response.json()["partitions"]
    assert {(r["projector"], r["partition"]) for r in rows} == {
        (p, n) for p in ("runs", "approvals", "channels", "governance", "evidence", "audit", "cost", "archive")
        for n in range(api.settings.partitions)}
    for row in rows:
        assert row["end_offset"] - row["position"] == row["lag_events"]
        assert row["status"] in ("OK", "LAGGING")
