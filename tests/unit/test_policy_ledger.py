"""Policy decided in the ledger: envelopes published and activated, calls evaluated when requested."""
from datetime import timedelta
from uuid import UUID

import pytest

from domain.ledger import TenantLedger
from domain.policy import PolicyEnvelope, REQUEST_SCHEMA, evaluate
from tests.unit.harness import ADMIN, OPERATOR, POLICY, Harness, approver, envelope
from tests.unit.test_policy import POLICIES

MALLORY = {"subject": "mallory", "roles": ["operator", "policy"]}


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.activate(POLICIES, "1.2.0", "default")
    return h


def payload(h: Harness, event_type: str, aggregate_id: str) -> dict:
    return [e["payload"] for e in h.log if e["type"] == event_type and e["aggregate_id"] == aggregate_id][-1]


def test_with_no_envelope_a_call_is_denied_and_the_high_risk_attempt_is_a_violation():
    h = Harness()
    run = h.running_run()
    reply = h.request_call(run, risk="critical", tool="db.drop_table")
    call = reply["aggregate_id"]
    assert h.types()[-3:] == ["tool_call.requested", "tool_call.policy_decided", "tool_call.violation_recorded"]
    assert (reply["decision"]["decision"], reply["decision"]["cause"], reply["decision"]["reason"]) == (
        "DENY", "fail_closed", "no policy envelope is active for the tenant: deny by default")
    violation = payload(h, "tool_call.violation_recorded", call)
    assert (violation["risk_tier"], violation["tool"], violation["requested_by"], violation["cause"]) == (
        "critical", "db.drop_table", "agent-1", "fail_closed")
    assert h.rejected({"type": "CompleteToolCall", "tool_call_id": call}) == "invalid_state"


def test_a_low_risk_denial_is_no_violation():
    h = Harness()
    h.request_call(h.running_run(), risk="low")
    assert h.types()[-1] == "tool_call.policy_decided"


@pytest.mark.parametrize("tool,risk,kind,state,determining", [
    ("search", "low", "ALLOW", "allowed", ["allow-low"]),
    ("shell", "high", "REQUIRE_APPROVAL", "awaiting_approval", ["two-person-high"]),
    ("iam.grant", "high", "REQUIRE_STEP_UP", "awaiting_step_up", ["step-up-admin"]),
    ("payments.refund", "medium", "EXTERNAL", "awaiting_decision", ["opa"]),
    ("db.drop_table", "low", "DENY", "blocked", ["no-drop"]),
])
def test_each_decision_is_recorded_with_its_evidence_in_the_event_and_the_reply(h, tool, risk, kind, state,
                                                                                 determining):
    run = h.running_run()
    reply = h.request_call(run, risk=risk, tool=tool)
    call = reply["aggregate_id"]
    decided = payload(h, "tool_call.policy_decided", call)
    digest = PolicyEnvelope("default", "1.2.0", POLICIES, REQUEST_SCHEMA).digest
    assert (decided["decision"], decided["policy_id"], decided["policy_version"], decided["digest"],
            decided["determining"], decided["source"], decided["evaluated_at"]) == (
        kind, "default", "1.2.0", digest, determining, "envelope", "2026-11-22T12:00:00.000000Z")
    assert {k: reply["decision"][k] for k in ("decision", "digest", "determining", "reason")} == {
        k: decided[k] for k in ("decision", "digest", "determining", "reason")}
    assert decided["request"]["principal"] == {"type": "Agent", "id": "a",
                                               "attrs": {"subject": "agent-1", "roles": ["operator"]}}
    assert (decided["request"]["resource"]["id"], decided["request"]["context"]["tool"]) == (run, tool)
    assert h.ledger.aggregates[UUID(call)].state == state


def test_the_recorded_request_re_evaluates_to_the_recorded_decision(h):
    run = h.running_run()
    for tool, risk in (("search", "low"), ("shell", "high"), ("db.drop_table", "low"), ("iam.grant", "high")):
        h.request_call(run, risk=risk, tool=tool)
    envelope_ = PolicyEnvelope("default", "1.2.0", POLICIES, REQUEST_SCHEMA)
    decided = [e["payload"] for e in h.log if e["type"] == "tool_call.policy_decided"]
    assert [evaluate(envelope_, p["request"]).evidence() for p in decided] == [
        {k: p[k] for k in ("decision", "policy_id", "policy_version", "digest", "determining", "reason", "cause",
                           "obligations")} for p in decided]


def test_the_two_person_rule_comes_from_the_policy_not_the_requester(h):
    run = h.running_run()
    call = h.request_call(run, risk="high")["aggregate_id"]
    assert h.rejected({"type": "RequestApproval", "run_id": run, "tool_call_id": call, "action": "run it",
                       "risk_tier": "high", "required_approvals": 1}) == "approvals_below_policy"
    assert h.rejected({"type": "RequestApproval", "run_id": run, "tool_call_id": call, "action": "run it",
                       "risk_tier": "high", "required_role": "intern"}) == "approver_role_mismatch"
    approval = h.approval(run, call)
    assert payload(h, "approval.requested", approval)["required_approvals"] == 2
    h.ok({"type": "GrantApproval", "approval_id": approval}, approver("ann"))
    assert h.rejected({"type": "CompleteToolCall", "tool_call_id": call}) == "invalid_state"
    h.ok({"type": "GrantApproval", "approval_id": approval}, approver("bob"))
    h.ok({"type": "CompleteToolCall", "tool_call_id": call})


def test_a_requester_holding_the_policy_role_cannot_allow_its_own_critical_call(h):
    run = h.running_run()
    # a read: the two-person rule (writes) would outrank the hand-off to the external engine
    reply = h.request_call(run, risk="critical", tool="payments.refund", actor=MALLORY, access="read")
    call = reply["aggregate_id"]
    assert reply["decision"]["decision"] == "EXTERNAL"
    own = h.external_decision(call, "ALLOW", MALLORY)
    assert (own["status"], own["code"], len(h.log)) == ("rejected", "requester_cannot_decide", 7)
    assert h.rejected({"type": "CompleteToolCall", "tool_call_id": call}, MALLORY) == "invalid_state"
    assert h.external_decision(call, "ALLOW", POLICY)["status"] == "accepted"
    assert payload(h, "tool_call.policy_decided", call)["bundle_revision"] == "bundle-42"


def test_a_stale_or_future_external_decision_is_refused_and_a_fresh_one_taken(h):
    run = h.running_run()
    call = h.request_call(run, risk="medium", tool="payments.refund")["aggregate_id"]  # @ttl_s("120")
    stale = h.external_decision(call, "ALLOW", age_s=121)
    future = h.external_decision(call, "ALLOW", age_s=-60)
    assert (stale["code"], future["code"]) == ("stale_decision", "stale_decision")
    assert "older than 120 s" in stale["reason"]
    fresh = h.external_decision(call, "ALLOW", age_s=119)
    assert (fresh["status"], fresh["decision"]["evaluated_at"]) == ("accepted", "2026-11-22T11:58:01.000000Z")


def test_a_call_the_envelope_decided_takes_no_external_decision(h):
    call = h.request_call(h.running_run(), risk="low")["aggregate_id"]
    assert h.external_decision(call, "DENY")["code"] == "invalid_state"


def test_an_external_denial_of_a_high_risk_call_is_a_violation(h):
    call = h.request_call(h.running_run(), risk="high", tool="payments.refund", access="read")["aggregate_id"]
    h.external_decision(call, "DENY")
    assert (h.types()[-1], payload(h, "tool_call.violation_recorded", call)["cause"]) == (
        "tool_call.violation_recorded", "external")


def test_a_step_up_of_the_named_kind_fresh_and_not_self_recorded_allows_the_call(h):
    run = h.running_run()
    call = h.request_call(run, risk="high", tool="iam.grant")["aggregate_id"]

    assert h.rejected({"type": "RecordStepUp", "tool_call_id": call, "kind": "totp", "subject": "agent-1",
                       "authenticated_at": h.now.isoformat()}, POLICY) == "step_up_kind_mismatch"
    assert h.rejected({"type": "RecordStepUp", "tool_call_id": call, "kind": "webauthn", "subject": "agent-1",
                       "authenticated_at": (h.now - timedelta(seconds=301)).isoformat()}, POLICY) == "step_up_stale"
    assert h.rejected({"type": "RecordStepUp", "tool_call_id": call, "kind": "webauthn", "subject": "bob",
                       "authenticated_at": h.now.isoformat()}, POLICY) == "step_up_wrong_subject"
    self_recorded = {"subject": "agent-1", "roles": ["operator", "policy"]}
    assert h.rejected({"type": "RecordStepUp", "tool_call_id": call, "kind": "webauthn", "subject": "agent-1",
                       "authenticated_at": h.now.isoformat()}, self_recorded) == "requester_cannot_decide"
    assert h.rejected({"type": "CompleteToolCall", "tool_call_id": call}) == "invalid_state"
    h.ok({"type": "RecordStepUp", "tool_call_id": call, "kind": "webauthn", "subject": "agent-1",
          "authenticated_at": (h.now - timedelta(seconds=30)).isoformat()}, POLICY)
    assert h.types()[-1] == "tool_call.stepped_up"
    h.ok({"type": "CompleteToolCall", "tool_call_id": call})


def throttled(h: Harness, run: str) -> dict:
    return h.request_call(run, risk="medium", tool="mail.send")["decision"]


def test_throttle_counts_from_the_log_and_is_identical_after_a_rebuild(h):
    run = h.running_run()
    first = [throttled(h, run)["decision"] for _ in range(3)]
    h.advance(30)
    fourth = throttled(h, run)
    rebuilt = Harness()
    rebuilt.now, rebuilt.log = h.now, list(h.log)
    rebuilt.ledger = TenantLedger("acme")
    for env in h.log:
        rebuilt.ledger.apply(env)
    again = throttled(rebuilt, run)
    assert (first, fourth["decision"], fourth["obligations"]) == (
        ["ALLOW", "ALLOW", "THROTTLE"], "THROTTLE", {"limit": 2, "window_s": 60, "calls_in_window": 2})
    assert {k: again[k] for k in ("decision", "obligations", "determining")} == {
        k: fourth[k] for k in ("decision", "obligations", "determining")}
    for harness in (h, rebuilt):
        harness.advance(31)
    assert (throttled(h, run)["decision"], throttled(rebuilt, run)["decision"]) == ("ALLOW", "ALLOW")


def test_a_version_must_be_greater_and_nothing_is_activated_by_a_refused_publish(h):
    code = h.rejected(envelope(POLICIES, "1.2.0", "default"), ADMIN)
    lower = h.rejected(envelope(POLICIES, "1.1.9", "default"), ADMIN)
    assert (code, lower) == ("policy_version_not_greater", "policy_version_not_greater")
    assert h.rejected({"type": "ActivatePolicy", "policy_id": "default", "version": "2.0.0"}, ADMIN) == (
        "policy_not_published")
    assert h.rejected(envelope(POLICIES, "2.0.0", "default"), OPERATOR) == "missing_role"
    bad = h.rejected(envelope(POLICIES + "\n@id(\"x\") permit(", "2.0.0", "default"), ADMIN)
    assert (bad, h.types().count("policy.published"), h.types().count("policy.activated")) == (
        "policy_syntax_error", 1, 1)


def test_the_most_specific_active_scope_decides(h):
    h.activate('@id("project-only") permit(principal, action, resource) when { context.tool == "search" };',
               "1.0.0", "strict", project="payments")
    inside = h.running_run(project="payments")
    outside = h.running_run()
    assert h.request_call(inside, risk="high")["decision"]["decision"] == "DENY"
    assert h.request_call(outside, risk="high")["decision"]["decision"] == "REQUIRE_APPROVAL"
    assert h.request_call(inside, risk="high", tool="search")["decision"]["policy_id"] == "strict"


def test_the_publish_reply_names_the_digest(h):
    reply = h.send(envelope(POLICIES, "1.3.0", "default"), ADMIN)
    assert reply["policy"] == {"policy_id": "default", "version": "1.3.0",
                               "digest": PolicyEnvelope("default", "1.3.0", POLICIES, REQUEST_SCHEMA).digest}
    wrong = h.send(envelope(POLICIES, "1.4.0", "default", digest="0" * 64), ADMIN)
    assert wrong["code"] == "policy_digest_mismatch"
