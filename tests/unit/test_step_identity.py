"""A step id names one step of one run in its tenant, as every aggregate id names one aggregate."""
import uuid

import pytest

from infra.adapters.http.errors import status_of_code
from tests.unit.harness import Harness


@pytest.fixture
def h() -> Harness:
    return Harness()


def start_step(run_id: str, step_id: str, name: str = "plan") -> dict:
    return {"type": "StartStep", "run_id": run_id, "step_id": step_id, "kind": "llm", "name": name}


def finish_step(run_id: str, step_id: str) -> dict:
    return {"type": "FinishStep", "run_id": run_id, "step_id": step_id, "outcome": "succeeded"}


def rebuilt_from(h: Harness) -> Harness:
    """A harness whose ledger is only the fold of h's log, as after a processor takeover."""
    rebuilt = Harness(h.ledger.tenant_id)
    for env in h.log:
        rebuilt.ledger.apply(env)
    rebuilt.log = list(h.log)
    rebuilt.now = h.now
    return rebuilt


def test_a_second_run_cannot_reuse_a_step_id_of_another_run(h):
    # Given two running runs of one tenant, and a step S started in the first
    first, second = h.running_run(), h.running_run()
    step = str(uuid.uuid4())
    assert h.ok(start_step(first, step)) == step
    # When the second run starts a step with the same id
    reply = h.send(start_step(second, step, name="other"))
    # Then it is refused as a duplicate step naming the step and the run that owns it (a 409 over HTTP;
    # the reply itself carries no status)
    assert (reply["status"], reply["code"], "http_status" in reply) == ("rejected", "duplicate_step", False)
    assert status_of_code(reply["code"]) == 409
    assert step in reply["reason"] and first in reply["reason"]
    assert h.types().count("run.step_started") == 1


def test_finishing_another_runs_step_is_not_found_and_leaves_it_open(h):
    # Given run R1 owns step S and run R2 tried to start a step S of its own
    first, second = h.running_run(), h.running_run()
    step = h.ok(start_step(first, str(uuid.uuid4())))
    h.send(start_step(second, step))
    # When R2 finishes "its" step S, then R2 has no step S, and R1's step S is untouched
    reply = h.send(finish_step(second, step))
    assert (reply["code"], status_of_code(reply["code"]), "http_status" in reply) == ("not_found", 404, False)
    assert f"run {second} has no step {step}" == reply["reason"]
    assert h.ledger.aggregates[uuid.UUID(first)].steps[step]["outcome"] is None
    h.ok(finish_step(first, step))
    assert h.ledger.aggregates[uuid.UUID(first)].steps[step]["outcome"] == "succeeded"


def test_a_step_id_stays_taken_after_its_run_has_ended(h):
    first, second = h.running_run(), h.running_run()
    step = h.ok(start_step(first, str(uuid.uuid4())))
    h.ok(finish_step(first, step))
    h.ok({"type": "CompleteRun", "run_id": first})
    assert h.rejected(start_step(second, step)) == "duplicate_step"


def test_a_step_id_reused_inside_its_own_run_is_still_a_duplicate(h):
    run = h.running_run()
    step = h.ok(start_step(run, str(uuid.uuid4())))
    reply = h.send(start_step(run, step))
    assert reply["code"] == "duplicate_step" and run in reply["reason"]


def test_step_ids_and_aggregate_ids_share_the_tenants_namespace(h):
    run = h.running_run()
    step = h.ok(start_step(run, str(uuid.uuid4())))
    assert h.rejected(start_step(run, run)) == "already_exists"
    assert h.rejected({"type": "RequestRun", "agent_id": "a", "run_id": step}) == "already_exists"
    assert h.rejected({"type": "RequestToolCall", "run_id": run, "tool_call_id": step, "tool": "t",
                       "risk_tier": "low", "params_digest": "0" * 64}) == "already_exists"


def test_another_tenant_may_use_the_same_step_id(h):
    step = h.ok(start_step(h.running_run(), str(uuid.uuid4())))
    other = Harness("globex")
    assert other.ok(start_step(other.running_run(), step)) == step


def test_the_fold_of_the_log_rebuilds_the_step_index_and_the_same_rejection(h):
    # Given a tenant whose runs R1 and R2 exist and R1 owns step S
    first, second = h.running_run(), h.running_run()
    step = h.ok(start_step(first, str(uuid.uuid4())))
    before = h.send(start_step(second, step))
    # When a processor takes over and rebuilds the tenant from the log alone
    rebuilt = rebuilt_from(h)
    # Then its state equals the state before, and it decides the same commands the same way
    assert rebuilt.ledger.step_runs == h.ledger.step_runs == {step: first}
    assert {k: vars(v) for k, v in rebuilt.ledger.aggregates.items()} == {
        k: vars(v) for k, v in h.ledger.aggregates.items()}
    after = rebuilt.send(start_step(second, step))
    assert before["code"] == "duplicate_step" and first in before["reason"]
    assert {k: after[k] for k in ("status", "code", "reason")} == {k: before[k] for k in ("status", "code", "reason")}
    assert rebuilt.send(finish_step(second, step))["code"] == "not_found"
    assert rebuilt.rejected({"type": "RequestRun", "agent_id": "a", "run_id": step}) == "already_exists"
