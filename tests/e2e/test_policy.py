"""Policy over HTTP: envelopes refused at publish naming the line, decisions in the reply, history, simulation."""
import pytest

from domain.policy import REQUEST_SCHEMA
from tests.support import auth, send, unique
from tests.unit.test_policy import POLICIES


def envelope(policies: str = POLICIES, version: str = "1.0.0") -> dict:
    return {"type": "PublishPolicy", "policy_id": "default", "version": version, "policies": policies,
            "cedar_schema": REQUEST_SCHEMA}


BAD = [
    (POLICIES.replace('action == Action::"write"', 'action = Action::"write"'), "policy_syntax_error", "line 5: "),
    (POLICIES + '\n@id("nope")\npermit(principal, action, resource)\n  when { context.autonomy == "full" };',
     "policy_unknown_attribute", "line 23: policy `nope`: attribute `autonomy`"),
    (POLICIES + '\n@id("typed")\npermit(principal, action, resource) when { context.tool > 3 };',
     "policy_schema_violation", "line 21: policy `typed`: "),
]


async def test_bad_envelopes_are_refused_with_422_naming_the_line_and_nothing_is_activated(http):
    tenant = unique("tenant-")
    for policies, code, where in BAD:
        response = await send(http, tenant, envelope(policies), "admin")
        assert (response.status_code, response.json()["code"], response.json()["reason"][:len(where)]) == (
            422, code, where)
    first = await send(http, tenant, envelope(), "admin")
    assert first.status_code == 200, first.text
    again = await send(http, tenant, envelope(), "admin")
    assert (again.status_code, again.json()["code"]) == (422, "policy_version_not_greater")
    seq = first.json()["events"][-1]["chain_seq"]
    active = await http.get("/v1/policies/active", params={"min_seq": seq, "wait_ms": 10000},
                            headers=auth(tenant, "auditor"))
    assert (active.status_code, active.json()["envelope"], active.json()["scope"]) == (200, None, "the tenant")
    listed = (await http.get("/v1/policies", headers=auth(tenant, "auditor"))).json()["items"]
    assert [(p["policy_id"], p["versions"], p["active"]) for p in listed] == [("default", 1, [])]


async def test_a_call_is_decided_in_the_reply_and_the_history_and_violations_are_queryable(http):
    tenant = unique("tenant-")
    run = None
    published = (await send(http, tenant, envelope(), "admin")).json()
    activated = await send(http, tenant, {"type": "ActivatePolicy", "policy_id": "default", "version": "1.0.0"}, "admin")
    assert activated.status_code == 200, activated.text
    run = (await send(http, tenant, {"type": "RequestRun", "agent_id": "bot"})).json()["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run})
    replies = {}
    for tool, risk in (("search", "low"), ("shell", "high"), ("db.drop_table", "critical")):
        response = await send(http, tenant, {"type": "RequestToolCall", "run_id": run, "tool": tool, "risk_tier": risk,
                                             "params_digest": "c" * 64})
        assert response.status_code == 200, response.text
        replies[tool] = response.json()
    assert {t: (r["decision"]["decision"], r["decision"]["determining"], r["decision"]["digest"])
            for t, r in replies.items()} == {
        "search": ("ALLOW", ["allow-low"], published["policy"]["digest"]),
        "shell": ("REQUIRE_APPROVAL", ["two-person-high"], published["policy"]["digest"]),
        "db.drop_table": ("DENY", ["no-drop"], published["policy"]["digest"])}
    seq = replies["db.drop_table"]["events"][-1]["chain_seq"]
    params = {"min_seq": seq, "wait_ms": 10000}
    versions = (await http.get("/v1/policies/default/versions", params=params, headers=auth(tenant, "auditor"))).json()
    assert [(v["version"], v["digest"], [a["project"] for a in v["activations"]]) for v in versions["items"]] == [
        ("1.0.0", published["policy"]["digest"], [None])]
    full = (await http.get("/v1/policies/default/versions/1.0.0", params=params, headers=auth(tenant, "auditor"))).json()
    assert (full["policies"], full["cedar_schema"]) == (POLICIES, REQUEST_SCHEMA)
    violations = (await http.get("/v1/policy-violations", params=params, headers=auth(tenant, "auditor"))).json()
    assert [(v["tool_call_id"], v["tool"], v["risk_tier"], v["cause"]) for v in violations["items"]] == [
        (replies["db.drop_table"]["aggregate_id"], "db.drop_table", "critical", "forbidden")]
    other = (await http.get("/v1/policy-violations", params={"wait_ms": 0}, headers=auth(unique("tenant-"), "auditor")))
    assert other.json()["items"] == []
    # Simulation: a draft that also forbids search changes exactly that decision, and appends nothing
    draft = POLICIES + '\n@id("no-search") forbid(principal, action, resource) when { context.tool == "search" };'
    simulated = await http.post("/v1/policies/simulate", params=params, headers=auth(tenant, "admin"),
                                json={"policies": draft, "cedar_schema": REQUEST_SCHEMA, "last": 10})
    assert simulated.status_code == 200, simulated.text
    body = simulated.json()
    assert (body["evaluated"], body["unchanged"], [(c["tool"], c["recorded"]["decision"], c["simulated"]["decision"])
                                                   for c in body["changed"]]) == (3, 2, [("search", "ALLOW", "DENY")])
    bad = await http.post("/v1/policies/simulate", headers=auth(tenant, "admin"),
                          json={"policies": BAD[0][0], "cedar_schema": REQUEST_SCHEMA})
    assert (bad.status_code, bad.json()["code"]) == (422, "policy_syntax_error")
    operator = await http.post("/v1/policies/simulate", headers=auth(tenant, "operator"),
                               json={"policies": draft, "cedar_schema": REQUEST_SCHEMA})
    assert operator.status_code == 403
    after = await send(http, tenant, {"type": "StartStep", "run_id": run, "kind": "llm", "name": "next"})
    assert after.json()["events"][0]["chain_seq"] == seq + 1  # the simulation appended nothing


@pytest.mark.parametrize("roles", [("operator",), ("policy",)])
async def test_only_admins_publish(http, roles):
    response = await send(http, unique("tenant-"), envelope(), *roles)
    assert (response.status_code, response.json()["code"]) == (403, "missing_role")
