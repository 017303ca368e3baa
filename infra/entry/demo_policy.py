"""The demo's policy part: an envelope published (a broken one refused first) and activated, then read back."""
from typing import Any

from domain.policy import REQUEST_SCHEMA

POLICIES = """// tools-default: what the demo tenant's agents may do
@id("low-risk") @reason("low and medium risk need no one")
permit(principal, action, resource) when { context.risk < 2 };

@id("two-person-high") @decision("REQUIRE_APPROVAL") @approvals("2") @approver_role("approver")
@reason("high risk: two people approve")
permit(principal, action, resource) when { context.risk >= 2 };

@id("no-destructive-db") @reason("dropping tables is never an agent's call")
forbid(principal, action, resource) when { context.tool == "db.drop_table" };
"""
BROKEN = POLICIES.replace("context.risk < 2", "context.risks < 2")


async def publish_policy(demo: Any) -> None:
    print("policy: a Cedar envelope, validated at publish, evaluated on every tool call (deny by default)")
    envelope = {"type": "PublishPolicy", "policy_id": "tools-default", "version": "2026.11.1",
                "policies": BROKEN, "cedar_schema": REQUEST_SCHEMA}
    await demo.step(demo.admin, "publish an envelope with an unknown attribute", envelope)
    published = await demo.step(demo.admin, "publish tools-default 2026.11.1", {**envelope, "policies": POLICIES})
    if not published.accepted:
        raise RuntimeError(f"the demo envelope was refused: {published.body}")
    print(f"  digest {published.body['policy']['digest']}")
    await demo.step(demo.admin, "activate it for the tenant", {
        "type": "ActivatePolicy", "policy_id": "tools-default", "version": "2026.11.1"})


def show_decision(outcome: Any, expected: str) -> None:
    decision = outcome.body.get("decision") or {}
    terms = decision.get("obligations") or {}
    print(f"      → {decision.get('decision')} by {decision.get('policy_id')}@{decision.get('policy_version')} "
          f"{decision.get('determining')}: {decision.get('reason')}" + (f" {terms}" if terms else ""))
    if decision.get("decision") != expected:
        raise RuntimeError(f"the policy should have decided {expected}, not {decision}")


async def show_policy(demo: Any, seq: int) -> None:
    http, headers = demo.agent.http, {"Authorization": f"Bearer {demo.admin.token}"}
    params = {"min_seq": seq, "wait_ms": 5000}
    versions = (await http.get("/v1/policies/tools-default/versions", params=params, headers=headers)).json()
    print("read model: policy history (GET /v1/policies/tools-default/versions)")
    for v in versions["items"]:
        print(f"  {v['version']} digest {v['digest'][:16]}… published by {v['published_by']}, "
              f"active in {[a['project'] or 'tenant' for a in v['activations']]}")
    violations = (await http.get("/v1/policy-violations", params=params, headers=headers)).json()["items"]
    print(f"  policy violations: {[(v['tool'], v['risk_tier'], v['cause']) for v in violations]}")
