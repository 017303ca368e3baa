"""Stuck runs in the domain: a deadline recorded at the request, and who may force-fail what (pure)."""
from datetime import datetime, timedelta, timezone

import pytest

from domain.registry import to_domain_event, upcast
from domain.run import Run, overdue_s
from tests.unit.harness import ADMIN, OPERATOR, Harness

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def h() -> Harness:
    return Harness()


def requested(h: Harness) -> dict:
    return next(e for e in reversed(h.log) if e["type"] == "run.requested")


def test_a_run_is_due_its_own_deadline_after_its_request_or_never(h):
    h.ok({"type": "RequestRun", "agent_id": "a", "deadline_s": 90})
    assert (requested(h)["schema_version"], requested(h)["payload"]["deadline_at"]) == (2, "2026-11-22T12:01:30.000000Z")
    h.ok({"type": "RequestRun", "agent_id": "a"})
    assert requested(h)["payload"]["deadline_at"] is None


def test_the_tenant_default_applies_to_later_runs_that_name_none(h):
    assert h.rejected({"type": "SetRunDeadline", "deadline_s": 600}) == "missing_role"
    h.ok({"type": "SetRunDeadline", "deadline_s": 600}, ADMIN)
    assert h.types()[-2:] == ["run_defaults.opened", "run_defaults.deadline_set"]
    h.ok({"type": "RequestRun", "agent_id": "a"})
    assert requested(h)["payload"]["deadline_at"] == "2026-11-22T12:10:00.000000Z"
    h.ok({"type": "RequestRun", "agent_id": "a", "deadline_s": 5})
    assert requested(h)["payload"]["deadline_at"] == "2026-11-22T12:00:05.000000Z"
    h.ok({"type": "SetRunDeadline", "deadline_s": None}, ADMIN)
    assert h.types()[-1] == "run_defaults.deadline_set"
    h.ok({"type": "RequestRun", "agent_id": "a"})
    assert requested(h)["payload"]["deadline_at"] is None


@pytest.mark.parametrize("deadline_s", [0, -1, 366 * 86400 + 1, 1.5, "60", True])
def test_a_deadline_is_a_whole_number_of_seconds_up_to_a_year(h, deadline_s):
    assert h.rejected({"type": "RequestRun", "agent_id": "a", "deadline_s": deadline_s}) == "invalid_command"
    assert h.rejected({"type": "SetRunDeadline", "deadline_s": deadline_s}, ADMIN) == "invalid_command"


def test_an_operator_force_fails_a_run_only_once_it_is_past_its_deadline(h):
    run = h.running_run(deadline_s=60)
    h.advance(60)
    assert h.rejected({"type": "ForceFailRun", "run_id": run, "reason": "hung"}) == "not_stuck"
    h.advance(0.001)
    h.ok({"type": "ForceFailRun", "run_id": run, "reason": "hung"}, OPERATOR)
    assert h.types()[-1] == "run.force_failed"
    assert h.rejected({"type": "ForceFailRun", "run_id": run, "reason": "again"}, ADMIN) == "invalid_state"


def test_a_run_without_a_deadline_is_never_stuck_and_only_an_admin_force_fails_it(h):
    run = h.running_run()
    h.advance(10 * 366 * 86400)
    reply = h.send({"type": "ForceFailRun", "run_id": run, "reason": "hung"})
    assert (reply["code"], "it has no deadline" in reply["reason"]) == ("not_stuck", True)
    h.ok({"type": "ForceFailRun", "run_id": run, "reason": "hung"}, ADMIN)


def test_an_ended_run_is_not_stuck_however_late():
    deadline = T0 + timedelta(seconds=1)
    late = T0 + timedelta(days=3)
    assert [overdue_s(state, deadline, late) for state in ("succeeded", "failed", "cancelled")] == [None] * 3
    assert [overdue_s(state, deadline, late) for state in ("requested", "running", "waiting_for_approval")] == \
        [3 * 86400 - 1.0] * 3
    assert (overdue_s("running", deadline, deadline), overdue_s("running", None, late)) == (None, None)


def test_a_run_requested_before_deadlines_existed_reads_without_one():
    payload = {"agent_id": "a", "project": "default", "budget_micros": None, "labels": {}}
    assert upcast(Run.Requested, payload, 1) == {**payload, "deadline_at": None}
    env = {"type": "run.requested", "schema_version": 1, "aggregate_type": "run", "chain_seq": 1,
           "aggregate_id": "01a20000-0000-7000-8000-000000000001", "aggregate_version": 1,
           "occurred_at": "2026-11-22T12:00:00.000000Z", "payload": payload}
    run = to_domain_event(env).mutate(None)
    assert (run.deadline_at, run.overdue_s(T0 + timedelta(days=1))) == (None, None)
