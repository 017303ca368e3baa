"""The pure parts of verifying read models: the merge that names each difference, the rows the chain says a
row-per-event model holds, the chain spool, the CLI's report and command, and the domain's RecordVerification."""
import pytest

from infra.adapters.eventlog.memory import MemoryLog
from infra.entry.verify_readmodels import command_of, lines
from projectors.audit import AuditProjection
from projectors.verification import Diff, Expected, Live, ModelVerdict, Problem, TenantReport
from projectors.verification_chain import Chains
from projectors.verification_expect import (ChannelPlan, aggregate_runs_expected, audit_expected,
                                            channel_events_expected, channel_heads_expected, leaves_expected,
                                            swept_runs)
from schemas.envelope import encode
from tests.unit.harness import ADMIN, Harness

AUDITOR = {"subject": "auditor-1", "roles": ["auditor"]}


async def diffed(expected, live, columns=("a", "b")) -> ModelVerdict:
    verdict = ModelVerdict("m")
    await Diff(verdict, "t", ("chain_seq",), columns).run(expected, live)
    return verdict


def kinds(verdict: ModelVerdict) -> list[tuple]:
    return [(p.key, p.kind, p.columns, p.detail) for p in verdict.problems]


# -- the merge ---------------------------------------------------------------------------------

async def test_equal_rows_make_no_problem_and_are_counted():
    rows = [((1,), (1, "x")), ((2,), (2, "y"))]
    verdict = await diffed([Expected(k, r) for k, r in rows], [Live(k, r) for k, r in rows])
    assert (verdict.rows, verdict.ok, verdict.problems) == (2, True, [])


async def test_each_difference_is_named_by_its_key_and_kind():
    expected = [Expected((1,), (1, "x")), Expected((2,), (2, "y")), Expected((3,), (3, "z")),
                Expected((4,), None, "absent", "the retention sweep at chain_seq 9 removed it"),
                Expected((5,), (5, "v"), "optional"), Expected((6,), (6, "w"), "optional")]
    live = [Live((1,), (1, "x")), Live((3,), (3, "Z")), Live((4,), (4, "u")), Live((6,), (6, "W")),
            Live((7,), (7, "t")), Live((8,), (8, "s"), "the row does not re-hash")]
    verdict = await diffed(expected, live)
    assert kinds(verdict) == [
        ({"chain_seq": 2}, "missing", (), "the chain has this row; the read model does not"),
        ({"chain_seq": 3}, "mismatched", ("b",), "differs from the chain in b"),
        ({"chain_seq": 4}, "extra", (), "still here after the retention sweep at chain_seq 9 removed it"),
        ({"chain_seq": 6}, "mismatched", ("b",), "differs from the chain in b"),
        ({"chain_seq": 7}, "extra", (), "no event of the chain makes this row"),
        ({"chain_seq": 8}, "extra", (), "no event of the chain makes this row")]
    assert (verdict.rows, verdict.missing, verdict.extra, verdict.mismatched, verdict.ok) == (6, 1, 3, 2, False)


async def test_a_flawed_row_equal_to_the_chain_s_is_still_mismatched_with_its_flaw():
    verdict = await diffed([Expected((1,), (1, "x"))], [Live((1,), (1, "x"), "the row does not re-hash")])
    assert kinds(verdict) == [({"chain_seq": 1}, "mismatched", (), "the row does not re-hash")]


async def test_rows_out_of_key_order_are_refused_not_merged():
    with pytest.raises(ValueError, match=r"rows out of key order: \(1,\) after \(2,\)"):
        await diffed([Expected((2,), (2, "x")), Expected((1,), (1, "x"))], [])


async def test_problems_beyond_those_kept_are_counted():
    verdict = await diffed([Expected((i,), (i, "x")) for i in range(1, 251)], [])
    assert (verdict.missing, len(verdict.problems), verdict.dropped) == (250, 200, 50)


def test_a_report_travels_as_json_unchanged():
    verdict = ModelVerdict("runs", 3, 1, 0, 0, 9, None, [Problem("runs", "runs", {"run_id": "r"}, "missing", (), "d")])
    report = TenantReport("acme", 9, {"runs": verdict})
    assert TenantReport.of(report.as_dict()) == report


# -- the chain's rows --------------------------------------------------------------------------

@pytest.fixture
def story() -> Harness:
    """Two finished runs with a tool call and an approval each; then an operational and an audit sweep of run 1."""
    h = Harness("acme")
    h.ledger.rules = type(h.ledger.rules)({"audit": 0, "operational": 0})
    runs = []
    for _ in range(2):
        run = h.running_run()
        call = h.tool_call(run, "REQUIRE_APPROVAL")
        approval = h.approval(run, call)
        h.ok({"type": "GrantApproval", "approval_id": approval}, {"subject": "ann", "roles": ["approver"]})
        h.ok({"type": "CompleteToolCall", "tool_call_id": call})
        h.ok({"type": "CompleteRun", "run_id": run})
        runs.append((run, call, approval))
    for record_class in ("operational", "audit"):
        h.ok({"type": "SetRetentionPolicy", "record_class": record_class, "days": 0}, ADMIN)
    h.advance(1)
    h.ok({"type": "SweepRetention", "record_class": "operational", "limit": 1}, ADMIN)
    h.ok({"type": "SweepRetention", "record_class": "audit", "limit": 1}, ADMIN)
    h.runs = runs
    return h


def test_audit_rows_are_the_projector_s_rows_and_a_swept_family_must_be_gone(story):
    log, (run1, call1, approval1) = story.log, story.runs[0]
    sweep = next(e for e in log if e["type"] == "retention.swept" and e["payload"]["record_class"] == "audit")
    swept = swept_runs("audit", log, len(log))
    assert swept == {run1: sweep["chain_seq"]}
    rows = list(audit_expected(log, len(log) - 3, swept))
    family = {run1, call1, approval1}
    assert [r.key for r in rows] == [(e["chain_seq"],) for e in log]
    assert [r.presence for r in rows] == [
        "optional" if e["chain_seq"] > len(log) - 3 else "absent" if e["aggregate_id"] in family else "required"
        for e in log]
    parents = {("acme", e["aggregate_id"]): (e["payload"]["run_id"], e["payload"].get("tool")) for e in log
               if e["type"] in ("tool_call.requested", "approval.requested")}
    assert [r.row for r in rows] == [AuditProjection.row(e, parents) for e in log]
    assert {r.why for r in rows if r.presence != "absent"} == {""}
    assert {r.why for r in rows if r.presence == "absent"} == {
        f"the retention sweep at chain_seq {sweep['chain_seq']} removed it"}


def test_a_sweep_the_model_has_not_applied_removes_nothing_yet(story):
    sweep = next(e for e in story.log if e["type"] == "retention.swept" and e["payload"]["record_class"] == "audit")
    assert swept_runs("audit", story.log, sweep["chain_seq"] - 1) == {}
    assert swept_runs("runs", story.log, sweep["chain_seq"]) == {story.runs[0][0]: sweep["chain_seq"] - 1}


def test_every_event_has_a_leaf_of_its_hash(story):
    assert [(r.key, r.row, r.presence) for r in leaves_expected(story.log, 3)][:4] == [
        ((e["chain_seq"],), (bytes.fromhex(e["hash"]),), "required" if e["chain_seq"] <= 3 else "optional")
        for e in story.log[:4]]


def test_channels_place_each_event_as_the_projector_does_and_count_every_one(story):
    log, (run1, call1, approval1), (run2, call2, approval2) = story.log, *story.runs
    swept = swept_runs("channels", log, len(log))
    plan = ChannelPlan(len(log), swept).count(log)
    run_events = {r: sum(1 for e in log if e["aggregate_id"] in m) for r, m in
                  ((run1, {run1, call1, approval1}), (run2, {run2, call2, approval2}))}
    assert plan.counts == {"tenant": len(log), "approvals": sum(1 for e in log if e["aggregate_type"] == "approval"),
                           f"run:{run1}": run_events[run1], f"run:{run2}": run_events[run2]}
    # the live heads say the tenant channel is trimmed below seq 1000: only below its newest 10 may it be
    rows = list(channel_events_expected(log, plan, plan.trimmed_below({"tenant": 1000}, 10)))
    gone = [r.key for r in rows if r.presence == "absent"]
    assert gone == [(e["chain_seq"], c) for e in log if e["aggregate_id"] in {run1, call1, approval1}
                    for c in sorted(["tenant", f"run:{run1}"] + (["approvals"] if e["aggregate_type"] == "approval"
                                                                  else []))]
    tenant_rows = [r for r in rows if r.key[1] == "tenant"]
    assert [r.row for r in tenant_rows] == [(i, e["type"], e["hash"], True) for i, e in enumerate(log, 1)]
    assert [r.presence for r in tenant_rows if r.key[0] not in dict(gone)] == [
        "optional" if i < len(log) - 9 else "required" for i, e in enumerate(log, 1)
        if e["aggregate_id"] not in {run1, call1, approval1}]
    assert channel_heads_expected(plan) == [Expected((c,), (n,)) for c, n in sorted(plan.counts.items())]
    assert [(r.key, r.row, r.presence) for r in aggregate_runs_expected(log, len(log), swept)] == sorted(
        [((call1,), (run1,), "absent"), ((approval1,), (run1,), "absent"),
         ((call2,), (run2,), "required"), ((approval2,), (run2,), "required")])


def test_trimming_never_reaches_into_a_channel_s_newest_events():
    plan = ChannelPlan(100, {})
    plan.counts = {"tenant": 100, "approvals": 5}
    assert plan.trimmed_below({"tenant": 95, "approvals": 1}, 10) == {"tenant": 91, "approvals": 1}
    assert plan.trimmed_below({"tenant": 40}, 10) == {"tenant": 40, "approvals": 1}


# -- the chain spool ---------------------------------------------------------------------------

class Twin:
    """The in-memory log as a verification reads it (its `partitions` attribute hides its method)."""

    def __init__(self, partitions: int):
        self.memory = MemoryLog(["x.events"], partitions)

    def produce(self, *args) -> None:
        self.memory.produce(*args)

    def reader(self):
        return self.memory.reader()

    async def partitions(self, topic: str) -> list[int]:
        return list(range(self.memory.partitions))


async def test_chains_are_spooled_per_tenant_verified_and_replayed(story, tmp_path):
    log_ = Twin(partitions=2)
    other = Harness("other")
    other.running_run()
    for env in story.log[:5] + other.log + story.log[5:7]:
        log_.produce("x.events", env["tenant_id"].encode(), encode(env))
    forged = {**story.log[7], "payload": {**story.log[7]["payload"], "agent_id": "forged"}}
    log_.produce("x.events", b"acme", encode(forged))
    chains = Chains(log_, "x.events", None, str(tmp_path))
    try:
        await chains.extend()
        acme, them = chains.get("acme"), chains.get("other")
        assert (chains.tenants(), acme.size, acme.records, them.size) == (["acme", "other"], 7, 8, 2)
        assert acme.broken[0] == 8 and "does not match the envelope's content" in acme.broken[1]
        assert [e["chain_seq"] for e in acme.envelopes("x.events")] == list(range(1, 8))
        assert [r.value for r in acme.replay("x.events")] == [encode(e) for e in story.log[:7]] + [encode(forged)]
        offsets = acme.offsets
        assert [acme.applied_before(o) for o in (0, offsets[0] + 1, offsets[-1], offsets[-1] + 1)] == [0, 1, 6, 7]
        log_.produce("x.events", b"other", encode(other.log[0]))  # a replayed record: does not continue the chain
        await chains.extend()
        assert (them.size, them.records, them.broken[0]) == (2, 3, 3)
    finally:
        chains.close()


# -- what the CLI prints and records -----------------------------------------------------------

def problem_report() -> TenantReport:
    audit = ModelVerdict("audit", 40, 0, 0, 1, 41, None, [Problem(
        "audit", "events", {"chain_seq": 12}, "mismatched", (), "the row does not re-hash to its hash")])
    runs = ModelVerdict("runs", 4, 1, 0, 0, 38, None, [Problem(
        "runs", "runs", {"tenant_id": "acme", "run_id": "r-1"}, "missing", (), "the chain has this row")])
    approvals = ModelVerdict("approvals", 1, 0, 0, 0, 20, 21, [Problem(
        "approvals", "held", {"chain_seq": 21}, "held", (), "the model holds the tenant here")])
    return TenantReport("acme", 41, {"audit": audit, "runs": runs, "approvals": approvals})


def test_each_problem_is_printed_with_its_model_tenant_place_and_what_to_do():
    assert lines(problem_report(), 42) == [
        "PROBLEMS tenant acme: chain of 41 events; audit 40 rows, runs 4 rows, approvals 1 rows; recorded as "
        "verification.recorded at chain_seq 42",
        "  audit tenant acme events chain_seq 12: mismatched: the row does not re-hash to its hash; "
        "fix: runledger projector rebuild audit",
        "  runs tenant acme runs tenant_id acme, run_id r-1: missing: the chain has this row; "
        "fix: runledger projector rebuild runs",
        "  note: runs has applied chain_seq 1 to 38 of 41; the last 3 events are not applied yet (lag) and were "
        "not checked",
        "  approvals tenant acme held chain_seq 21: held: the model holds the tenant here; fix: fix the cause, then "
        "runledger projector resume approvals --tenant acme"]


def test_the_recorded_result_is_accepted_as_it_is_sent_and_is_on_the_chain_exactly():
    h = Harness("acme")
    for _ in range(41):
        h.ok({"type": "RequestRun", "agent_id": "a"})
    body = command_of(problem_report())
    verification = h.ok(body, AUDITOR)
    recorded = h.log[-1]
    assert (recorded["type"], recorded["aggregate_id"], recorded["aggregate_type"]) == (
        "verification.recorded", body["verification_id"], "verification")
    assert recorded["payload"] == {
        "chain_size": 41, "ok": False, "verified_by": "auditor-1",
        "models": {"audit": {"rows": 40, "missing": 0, "extra": 0, "mismatched": 1, "applied": 41, "stopped_at": None,
                             "ok": False},
                   "runs": {"rows": 4, "missing": 1, "extra": 0, "mismatched": 0, "applied": 38, "stopped_at": None,
                            "ok": False},
                   "approvals": {"rows": 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 20,
                                 "stopped_at": 21, "ok": False}},
        "problems": [{"model": "audit", "table": "events", "key": {"chain_seq": 12}, "kind": "mismatched",
                      "columns": [], "detail": "the row does not re-hash to its hash"},
                     {"model": "runs", "table": "runs", "key": {"tenant_id": "acme", "run_id": "r-1"},
                      "kind": "missing", "columns": [], "detail": "the chain has this row"},
                     {"model": "approvals", "table": "held", "key": {"chain_seq": 21}, "kind": "held",
                      "columns": [], "detail": "the model holds the tenant here"}]}
    assert verification == body["verification_id"]


@pytest.mark.parametrize("change,code", [
    (lambda b: b.update(chain_size=99), "inconsistent_verification"),
    (lambda b: b["models"]["runs"].update(ok=True), "inconsistent_verification"),
    (lambda b: b["models"].pop("audit"), "inconsistent_verification"),
    (lambda b: b["problems"][0].update(kind="fine"), "invalid_command"),
    (lambda b: b.update(models={}), "invalid_command"),
])
def test_a_verdict_that_contradicts_itself_or_the_chain_is_refused(change, code):
    h = Harness("acme")
    for _ in range(41):
        h.ok({"type": "RequestRun", "agent_id": "a"})
    body = command_of(problem_report())
    change(body)
    assert h.rejected(body, AUDITOR) == code


def test_only_auditors_admins_and_runledger_itself_record_verifications():
    h = Harness("acme")
    h.ok({"type": "RequestRun", "agent_id": "a"})
    body = {"type": "RecordVerification", "chain_size": 1,
            "models": {"runs": {"rows": 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 1, "ok": True}}}
    assert h.rejected(body, {"subject": "agent", "roles": ["operator"]}) == "missing_role"
    for actor in (ADMIN, {"subject": "runledger", "roles": ["system"]}, AUDITOR):
        h.ok(body, actor)
    assert [(e["actor"]["subject"], e["payload"]["ok"]) for e in h.log[1:]] == [
        ("root", True), ("runledger", True), ("auditor-1", True)]
