"""Simulating a draft: which recorded decisions it would change, and why; the chain is not touched."""
import asyncio

from domain.policy import REQUEST_SCHEMA, PolicyEnvelope
from queries.metrics import ViolationMetrics
from queries.policy import simulation
from tests.unit.harness import Harness
from tests.unit.test_policy import POLICIES


def recorded(h: Harness) -> list[dict]:
    return [{"tool_call_id": e["aggregate_id"], "chain_seq": e["chain_seq"], **e["payload"]}
            for e in h.log if e["type"] == "tool_call.policy_decided"]


def test_a_draft_reports_each_decision_it_would_change_and_appends_nothing():
    h = Harness()
    h.activate(POLICIES, "1.2.0", "default")
    run = h.running_run()
    for tool, risk in (("search", "low"), ("shell", "high"), ("db.drop_table", "low")):
        h.request_call(run, risk=risk, tool=tool)
    before = list(h.log)
    stricter = POLICIES.replace('@approvals("2")', '@approvals("1")') + \
        '\n@id("no-search") forbid(principal, action, resource) when { context.tool == "search" };'
    draft = PolicyEnvelope("default", "1.3.0", stricter, REQUEST_SCHEMA)
    result = simulation(draft, recorded(h))
    assert (result["evaluated"], result["unchanged"], result["not_replayable"]) == (3, 1, 0)
    assert [(c["tool"], c["recorded"]["decision"], c["simulated"]["decision"], c["simulated"]["determining"])
            for c in result["changed"]] == [("search", "ALLOW", "DENY", ["no-search"]),
                                            ("shell", "REQUIRE_APPROVAL", "REQUIRE_APPROVAL", ["two-person-high"])]
    assert [c["simulated"]["obligations"]["approvals"] for c in result["changed"][1:]] == [1]
    assert h.log == before


def test_an_external_decision_is_counted_as_not_replayable():
    h = Harness()
    h.activate()
    call = h.tool_call(h.running_run(), "EXTERNAL")
    h.external_decision(call, "ALLOW")
    result = simulation(PolicyEnvelope("d", "1.0.0", POLICIES, REQUEST_SCHEMA), recorded(h))
    assert (result["evaluated"], result["not_replayable"]) == (1, 1)


class FakeDiscovery:
    audit = "audit"

    async def query(self, projection, sql, params):
        assert (projection, "tool_call.violation_recorded" in sql) == ("audit", True)
        return [{"tenant_id": "acme", "n": 3}, {"tenant_id": "beta", "n": 1}]


def test_ops_count_violations_per_tenant():
    metrics = ViolationMetrics(FakeDiscovery())
    asyncio.run(metrics.refresh())
    assert [(o.value, o.attributes) for o in metrics.violations(None)] == [
        (3, {"tenant_id": "acme"}), (1, {"tenant_id": "beta"})]
