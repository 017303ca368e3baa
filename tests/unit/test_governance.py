"""Legal holds, retention policies and sweeps, decided by a TenantLedger with no I/O."""
import json
import uuid

import pytest

from commands.intake import command_envelope
from domain.errors import Forbidden
from domain.ledger import TenantLedger
from infra.adapters.http.auth import Principal
from domain.retention import Rules
from tests.unit.harness import ADMIN, OPERATOR, Harness

SUPER = {"subject": "platform-root", "roles": ["super_admin"]}
AUDITOR = {"subject": "aud", "roles": ["auditor"]}
NO_FLOOR = Rules({"audit": 0, "operational": 0})


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.ledger.rules = NO_FLOOR
    return harness


def finished_run(h: Harness, actor: dict = OPERATOR) -> str:
    run = h.ok({"type": "RequestRun", "agent_id": "a"}, actor)
    h.ok({"type": "StartRun", "run_id": run}, actor)
    h.ok({"type": "CompleteRun", "run_id": run}, actor)
    return run


def hold(h: Harness, scope: dict, actor: dict = ADMIN, **extra) -> str:
    return h.ok({"type": "PlaceLegalHold", "matter": "Doe v. Acme", "reason": "litigation", "scope": scope,
                 **extra}, actor)


def sweep(h: Harness, record_class: str = "operational", actor: dict = ADMIN, **extra) -> dict:
    reply = h.send({"type": "SweepRetention", "record_class": record_class, **extra}, actor)
    return reply


def last_sweep(h: Harness) -> dict:
    return [e for e in h.log if e["type"] == "retention.swept"][-1]["payload"]


def test_a_sweep_removes_expired_unheld_runs_and_lists_exactly_them(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 1}, ADMIN)
    old, held = finished_run(h), finished_run(h)
    hold_id = hold(h, {"kind": "run", "run_id": held})
    h.advance(2 * 86400)
    young, running = finished_run(h), h.running_run()
    assert sweep(h)["status"] == "accepted"
    swept = last_sweep(h)
    assert swept["run_ids"] == [old]
    assert swept["counts"] == {"runs": 1, "events": 3}
    assert swept["kept_by_holds"] == {hold_id: 1}
    assert (swept["record_class"], swept["stores"], swept["policy_version"], swept["days"]) == (
        "operational", ["runs", "approvals", "channels"], 1, 1)
    assert young not in swept["run_ids"] and running not in swept["run_ids"]


def test_releasing_the_hold_lets_the_next_sweep_remove_what_it_kept(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    held = finished_run(h)
    hold_id = hold(h, {"kind": "subject", "subject": OPERATOR["subject"]})
    h.advance(1)
    assert sweep(h)["code"] == "nothing_to_sweep"
    h.ok({"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "settled"}, ADMIN)
    assert sweep(h)["status"] == "accepted"
    assert last_sweep(h)["run_ids"] == [held]
    assert sweep(h)["code"] == "nothing_to_sweep"


@pytest.mark.parametrize("scope", [
    {"kind": "tenant"},
    {"kind": "subject", "subject": "agent-1"},
    {"kind": "time_range", "start": "2026-11-22T11:00:00Z", "end": "2026-11-22T12:00:00.000001Z"},
])
def test_every_scope_kind_keeps_what_it_covers(h, scope):
    h.ok({"type": "SetRetentionPolicy", "record_class": "audit", "days": 0}, ADMIN)
    finished_run(h)
    hold(h, scope)
    h.advance(10)
    assert sweep(h, "audit")["code"] == "nothing_to_sweep"


def test_an_aggregate_scope_on_a_tool_call_keeps_its_whole_run(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    run = h.running_run()
    call = h.tool_call(run, "ALLOW")
    h.ok({"type": "CompleteRun", "run_id": run})
    other = finished_run(h)
    hold(h, {"kind": "aggregate", "aggregate_id": call})
    h.advance(1)
    sweep(h)
    assert last_sweep(h)["run_ids"] == [other]


def test_a_time_range_outside_the_run_does_not_keep_it(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    run = finished_run(h)
    hold(h, {"kind": "time_range", "start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"})
    h.advance(1)
    sweep(h)
    assert last_sweep(h)["run_ids"] == [run]


def test_a_swept_run_can_no_longer_change(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    run = h.running_run()
    h.ok({"type": "FailRun", "run_id": run, "error": "boom"})
    h.advance(1)
    sweep(h)
    assert h.rejected({"type": "RetryRun", "run_id": run}) == "swept"


def test_the_sweep_limit_bounds_one_event_and_the_rest_follow(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    runs = [finished_run(h) for _ in range(5)]
    h.advance(1)
    sweep(h, limit=2)
    first = last_sweep(h)["run_ids"]
    sweep(h, limit=2)
    second = last_sweep(h)["run_ids"]
    sweep(h, limit=2)
    assert sorted(first + second + last_sweep(h)["run_ids"]) == sorted(runs)
    assert len(first) == len(second) == 2


def test_defaults_keep_three_years_of_audit_records():
    h = Harness()
    finished_run(h)
    h.advance(3 * 365 * 86400 - 60)
    assert sweep(h, "audit")["code"] == "nothing_to_sweep"
    h.advance(120)
    assert sweep(h, "audit")["status"] == "accepted"


def test_a_policy_under_the_minimum_is_refused_and_appends_nothing():
    h = Harness()
    assert h.rejected({"type": "SetRetentionPolicy", "record_class": "audit", "days": 30},
                      ADMIN) == "retention_below_minimum"
    assert h.send({"type": "SetRetentionPolicy", "record_class": "audit", "days": 30}, ADMIN)["reason"] == (
        "audit records must be kept at least 1095 days in this deployment; 30 is below that minimum")


@pytest.mark.parametrize("body,code", [
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "galaxy"}}, "invalid_command"),
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r",
      "scope": {"kind": "time_range", "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}},
     "invalid_command"),
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r",
      "scope": {"kind": "time_range", "start": "2026-01-01T00:00:00", "end": "2026-02-01T00:00:00"}},
     "invalid_command"),
    ({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "run", "run_id": str(uuid.uuid4())}},
     "not_found"),
    ({"type": "ReleaseLegalHold", "hold_id": str(uuid.uuid4()), "reason": "r"}, "not_found"),
    ({"type": "SetRetentionPolicy", "record_class": "forever", "days": 10}, "invalid_command"),
])
def test_bad_governance_input_is_refused_specifically(h, body, code):
    assert h.rejected(body, ADMIN) == code


def test_a_reversed_time_range_names_the_problem(h):
    reply = h.send({"type": "PlaceLegalHold", "matter": "m", "reason": "r",
                    "scope": {"kind": "time_range", "start": "2026-02-01T00:00:00Z",
                              "end": "2026-01-01T00:00:00Z"}}, ADMIN)
    assert "the time range is reversed or empty" in reply["reason"]


@pytest.mark.parametrize("actor", [OPERATOR, AUDITOR])
def test_only_admins_hold_release_and_set_retention(h, actor):
    run = finished_run(h)
    assert h.rejected({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "tenant"}},
                      actor) == "missing_role"
    hold_id = hold(h, {"kind": "run", "run_id": run})
    assert h.rejected({"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "r"}, actor) == "missing_role"
    assert h.rejected({"type": "SetRetentionPolicy", "record_class": "operational", "days": 5},
                      actor) == "missing_role"
    assert h.rejected({"type": "SweepRetention", "record_class": "operational"}, actor) == "missing_role"


def test_a_platform_hold_is_released_only_by_a_super_admin(h):
    hold_id = hold(h, {"kind": "tenant"}, SUPER, tenant_id="acme")
    placed = h.log[-1]["payload"]
    assert (placed["platform"], placed["placed_by"]) == (True, "platform-root")
    assert h.rejected({"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "r"}, ADMIN) == "platform_hold"
    h.ok({"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "r", "tenant_id": "acme"}, SUPER)
    assert h.rejected({"type": "ReleaseLegalHold", "hold_id": hold_id, "reason": "r"}, SUPER) == "hold_released"


def test_a_command_routed_to_the_wrong_tenant_is_refused(h):
    assert h.rejected({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "tenant"},
                       "tenant_id": "globex"}, SUPER) == "wrong_tenant"


def test_holds_and_sweeps_are_rebuilt_from_the_log(h):
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    kept, gone = finished_run(h), finished_run(h)
    hold(h, {"kind": "run", "run_id": kept})
    h.advance(1)
    sweep(h)
    rebuilt = TenantLedger("acme", rules=NO_FLOOR)
    for env in h.log:
        rebuilt.apply(env)
    assert {r: f.swept for r, f in rebuilt.families.runs.items()} == {
        kept: {}, gone: {"operational": h.log[-1]["chain_seq"]}}
    h.ledger = rebuilt
    assert sweep(h)["code"] == "nothing_to_sweep"
    assert h.rejected({"type": "RetryRun", "run_id": gone}) == "swept"


def test_intake_routes_a_platform_hold_to_the_named_tenant_as_super_admin():
    body = json.dumps({"type": "PlaceLegalHold", "tenant_id": "acme", "matter": "m", "reason": "r",
                        "scope": {"kind": "tenant"}}).encode()
    envelope = command_envelope(Principal("ops", "root", ("admin",)), body, None, None, None, "ops")
    assert (envelope["tenant_id"], envelope["actor"]) == ("acme", {"subject": "root", "roles": ["super_admin"]})
    for principal, code in ((Principal("globex", "root", ("admin",)), "cross_tenant"),
                            (Principal("ops", "op", ("auditor", "operator")), "missing_role")):
        with pytest.raises(Forbidden) as refused:
            command_envelope(principal, body, None, None, None, "ops")
        assert refused.value.code == code
    own = command_envelope(Principal("acme", "root", ("admin",)), body, None, None, None, "ops")
    assert (own["tenant_id"], own["actor"]["roles"]) == ("acme", ["admin"])
