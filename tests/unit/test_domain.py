"""Domain rules, decided by a TenantLedger with no I/O."""
import time
import uuid

import pytest

from domain.ledger import TenantLedger
from schemas.chain import ChainVerdict, verify_chain
from tests.unit.harness import ADMIN, OPERATOR, Harness, approver


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_run_lifecycle_appends_a_verifiable_chain(h):
    run = h.running_run()
    step = h.ok({"type": "StartStep", "run_id": run, "kind": "llm", "name": "plan"})
    h.ok({"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "succeeded"})
    h.ok({"type": "CompleteRun", "run_id": run})
    assert h.types() == ["run.requested", "run.started", "run.step_started", "run.step_finished",
                         "run.succeeded"]
    assert [e["chain_seq"] for e in h.log] == [1, 2, 3, 4, 5]
    assert verify_chain("acme", h.log) == ChainVerdict(True, 5, h.log[-1]["hash"])


@pytest.mark.parametrize("body_type,code", [
    ("CompleteRun", "invalid_state"), ("RetryRun", "invalid_state"), ("ResumeRun", "invalid_state"),
])
def test_illegal_transitions_are_rejected_and_append_nothing(h, body_type, code):
    run = h.ok({"type": "RequestRun", "agent_id": "a"})
    body = {"type": body_type, "run_id": run}
    if body_type == "ResumeRun":
        body["reason"] = "x"
    assert h.rejected(body) == code


def test_terminal_runs_refuse_everything(h):
    run = h.running_run()
    h.ok({"type": "CancelRun", "run_id": run, "reason": "stop"})
    assert h.rejected({"type": "CancelRun", "run_id": run, "reason": "again"}) == "invalid_state"
    assert h.rejected({"type": "ForceFailRun", "run_id": run, "reason": "x"}, ADMIN) == "invalid_state"
    assert h.rejected({"type": "StartStep", "run_id": run, "kind": "llm", "name": "x"}) == "invalid_state"


def test_retry_counts_attempts_and_steps_count_attempts_by_name(h):
    run = h.running_run()
    first = h.ok({"type": "StartStep", "run_id": run, "kind": "tool", "name": "fetch"})
    h.ok({"type": "FinishStep", "run_id": run, "step_id": first, "outcome": "failed", "error": "503"})
    h.ok({"type": "StartStep", "run_id": run, "kind": "tool", "name": "fetch"})
    h.ok({"type": "FailRun", "run_id": run, "error": "gave up"})
    h.ok({"type": "RetryRun", "run_id": run})
    steps = [e["payload"]["attempt"] for e in h.log if e["type"] == "run.step_started"]
    retried = [e["payload"]["attempt"] for e in h.log if e["type"] == "run.retried"]
    assert (steps, retried) == ([1, 2], [2])


def test_unknown_ids_are_not_found(h):
    assert h.rejected({"type": "StartRun", "run_id": str(uuid.uuid4())}) == "not_found"
    assert h.rejected({"type": "GrantApproval", "approval_id": str(uuid.uuid4())},
                      approver("ann")) == "not_found"


def test_a_deny_is_final(h):
    run = h.running_run()
    call = h.tool_call(run, "DENY")
    assert h.rejected({"type": "CompleteToolCall", "tool_call_id": call}) == "invalid_state"
    override = h.external_decision(call, "ALLOW", ADMIN)
    assert (override["status"], override["code"]) == ("rejected", "decision_final")


def test_only_the_policy_role_records_decisions(h):
    run = h.running_run()
    call = h.tool_call(run, "EXTERNAL")
    assert h.external_decision(call, "ALLOW", OPERATOR)["code"] == "missing_role"


def test_requester_cannot_approve_and_one_approver_counts_once(h):
    run = h.running_run()
    call = h.tool_call(run, "REQUIRE_APPROVAL")
    approval = h.approval(run, call, count=2)
    requester = {"subject": OPERATOR["subject"], "roles": ["operator", "approver"]}
    assert h.rejected({"type": "GrantApproval", "approval_id": approval}, requester) == "requester_cannot_approve"
    h.ok({"type": "GrantApproval", "approval_id": approval}, approver("ann"))
    assert h.rejected({"type": "GrantApproval", "approval_id": approval}, approver("ann")) == "already_approved"
    assert h.rejected({"type": "CompleteToolCall", "tool_call_id": call}) == "invalid_state"
    h.ok({"type": "GrantApproval", "approval_id": approval}, approver("bob"))
    assert h.types()[-4:] == ["approval.vote_recorded", "approval.granted", "tool_call.approved",
                              "run.approval_resolved"]
    h.ok({"type": "CompleteToolCall", "tool_call_id": call})


def test_approver_needs_the_required_role(h):
    run = h.running_run()
    approval = h.approval(run, role="security-lead")
    assert h.rejected({"type": "GrantApproval", "approval_id": approval}, approver("ann")) == "missing_role"


def test_run_waits_for_approval_and_resumes_when_it_is_resolved(h):
    run = h.running_run()
    approval = h.approval(run)
    assert h.rejected({"type": "CompleteRun", "run_id": run}) == "invalid_state"
    h.ok({"type": "DenyApproval", "approval_id": approval, "reason": "no"}, approver("ann"))
    h.ok({"type": "CompleteRun", "run_id": run})


def test_expiry_fires_once_and_blocks_the_tool_call(h):
    run = h.running_run()
    call = h.tool_call(run, "REQUIRE_APPROVAL")
    approval = h.approval(run, call, expires=30)
    h.advance(29)
    assert h.fire_timers() == []
    h.advance(1)
    assert h.fire_timers() == [approval]
    assert h.fire_timers() == []
    assert h.types()[-3:] == ["approval.expired", "tool_call.blocked", "run.approval_resolved"]
    assert h.rejected({"type": "GrantApproval", "approval_id": approval}, approver("ann")) == "invalid_state"


def test_an_approval_past_its_expiry_cannot_be_granted_even_before_the_timer_fires(h):
    run = h.running_run()
    approval = h.approval(run, expires=5)
    h.advance(6)
    assert h.rejected({"type": "GrantApproval", "approval_id": approval}, approver("ann")) == "expired"


def test_budget_refuses_costs_and_runs_over_the_limit(h):
    h.ok({"type": "SetBudget", "project": "p", "period": "month", "limit_micros": 1000,
          "currency": "EUR"}, ADMIN)
    run = h.running_run(project="p")
    cost = {"type": "RecordCost", "run_id": run, "provider": "x", "model": "m",
            "amount_micros": 600, "currency": "EUR"}
    h.ok(cost)
    assert h.rejected(cost) == "budget_exceeded"
    assert h.rejected({**cost, "amount_micros": 10, "currency": "USD"}) == "currency_mismatch"
    h.ok({**cost, "amount_micros": 400})
    assert h.rejected({"type": "RequestRun", "agent_id": "b", "project": "p"}) == "budget_exceeded"
    h.advance(31 * 24 * 3600)
    h.ok({"type": "RequestRun", "agent_id": "b", "project": "p"})


def test_run_budget_caps_its_own_costs(h):
    run = h.running_run(budget_micros=100)
    cost = {"type": "RecordCost", "run_id": run, "provider": "x", "model": "m",
            "amount_micros": 101, "currency": "USD"}
    assert h.rejected(cost) == "budget_exceeded"
    h.ok({**cost, "amount_micros": 100})


def test_only_admins_set_budgets_and_force_fail_a_run_that_is_not_stuck(h):
    run = h.running_run()
    assert h.rejected({"type": "SetBudget", "project": "p", "period": "day", "limit_micros": 1,
                       "currency": "USD"}) == "missing_role"
    assert h.rejected({"type": "ForceFailRun", "run_id": run, "reason": "x"}) == "not_stuck"
    h.ok({"type": "ForceFailRun", "run_id": run, "reason": "x"}, ADMIN)


def test_expected_version_conflict(h):
    run = h.running_run()
    assert h.rejected({"type": "CancelRun", "run_id": run, "reason": "x"}, expected_version=1) == "version_conflict"
    h.ok({"type": "CancelRun", "run_id": run, "reason": "x"}, expected_version=2)


def test_idempotency_returns_the_first_outcome_and_refuses_a_different_body(h):
    run = h.running_run()
    body = {"type": "StartStep", "run_id": run, "kind": "llm", "name": "x"}
    first = h.send(body, key="k1")
    again = h.send(body, key="k1")
    assert (again["replayed"], again["events"], len(h.log)) == (True, first["events"], 3)
    other = h.send({**body, "name": "y"}, key="k1")
    assert (other["status"], other["code"]) == ("rejected", "idempotency_key_reused")
    rejected = h.send({"type": "CompleteRun", "run_id": str(uuid.uuid4())}, key="k2")
    assert h.send({"type": "CompleteRun", "run_id": str(uuid.uuid4())}, key="k2")["code"] == "idempotency_key_reused"
    assert rejected["code"] == "not_found"


def test_replaying_the_log_rebuilds_identical_state(h):
    run = h.running_run()
    step = h.ok({"type": "StartStep", "run_id": run, "kind": "llm", "name": "plan"})
    call = h.tool_call(run, "REQUIRE_APPROVAL")
    h.approval(run, call, count=2, expires=10)
    h.ok({"type": "RecordCost", "run_id": run, "provider": "x", "model": "m",
          "amount_micros": 5, "currency": "USD"})
    rebuilt = TenantLedger("acme")
    for env in h.log:
        rebuilt.apply(env)
    assert rebuilt.chain.head_hash == h.ledger.chain.head_hash
    assert rebuilt.expiries == h.ledger.expiries
    assert rebuilt.step_runs == h.ledger.step_runs == {step: run}
    assert {k: vars(v) for k, v in rebuilt.aggregates.items()} == {
        k: vars(v) for k, v in h.ledger.aggregates.items()}


def test_an_unknown_event_type_stops_the_fold(h):
    h.running_run()
    rebuilt = TenantLedger("acme")
    with pytest.raises(Exception, match="unknown event type 'run.teleported'"):
        from schemas.envelope import seal
        rebuilt.apply(seal({**{k: v for k, v in h.log[0].items() if k != "hash"}, "type": "run.teleported"}))


def test_only_commands_with_an_idempotency_key_are_remembered(h):
    run = h.running_run()
    h.send({"type": "StartStep", "run_id": run, "kind": "llm", "name": "x"}, key="keep-me")
    assert list(h.ledger.replies) == ["keep-me"]
    rebuilt = TenantLedger("acme")
    rebuilt.remember({"idempotency_key": None, "command_id": "c"})
    rebuilt.remember(h.ledger.replies["keep-me"])
    rebuilt.remember({**h.ledger.replies["keep-me"], "command_id": "later", "replayed": True})
    assert rebuilt.replies == h.ledger.replies


def test_event_ids_are_uuidv7_on_the_clock_even_at_thousands_per_second():
    # Given a ledger appending far more than one event per millisecond (as the processor does)
    h = Harness()
    started = time.time()
    for _ in range(5000):
        h.ok({"type": "RequestRun", "agent_id": "a"})
    finished = time.time()
    # Then every event_id is a UUIDv7 whose timestamp lies within the time it was made
    stamps = [uuid.UUID(e["event_id"]).int >> 80 for e in h.log]
    assert {uuid.UUID(e["event_id"]).version for e in h.log} == {7}
    assert int(started * 1000) <= min(stamps) and max(stamps) <= int(finished * 1000) + 1
    assert len(set(e["event_id"] for e in h.log)) == len(h.log) == 5000
