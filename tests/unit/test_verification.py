"""The pure parts of verifying read models: the merge that names each difference, the rows the chain says a
row-per-event model holds, the chain spool, the archive's files against the chain (on a directory), the CLI's
report and command, and the domain's RecordVerification."""
import shutil

import pytest

from infra.adapters.eventlog.memory import MemoryLog
from infra.entry.verify_readmodels import command_of, lines
from projectors.archive import ArchiveProjection
from projectors.audit import AuditProjection
from projectors.base import Batch
from projectors.verification import Diff, Expected, Live, ModelVerdict, Problem, TenantReport
from projectors.verification_archive import ArchiveCheck, Places, structural
from projectors.verification_chain import Chains
from projectors.verification_expect import (ChannelPlan, aggregate_runs_expected, audit_expected,
                                            channel_events_expected, channel_heads_expected, leaves_expected,
                                            swept_runs)
from schemas.bundle import jcs
from schemas.envelope import encode
from tests.unit.harness import ADMIN, Harness
from tests.unit.test_tiles import (CHAIN, T, Crash, archive, at, family_story, flip, leaf_row, root_b64,
                                   signed_root, tombstone_line)

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


# -- the archive -------------------------------------------------------------------------------

async def archive_verdict(root, chain: list[dict]) -> ModelVerdict:
    """One look of the archive check at the tenant's files under `root`, against `chain` on a one-partition log."""
    log_ = Twin(partitions=1)
    for env in chain:
        log_.produce("x.events", env["tenant_id"].encode(), encode(env))
    chains = Chains(log_, "x.events", None, str(root.parent))
    try:
        await chains.extend()
        verdict = ModelVerdict("archive")
        await ArchiveCheck(ArchiveProjection(root, "test"), chains, 1).verify(chains.get(T), verdict)
        return verdict
    finally:
        chains.close()


def problem(table: str, key: dict, kind: str, columns: tuple = (), detail: str = "") -> Problem:
    return Problem("archive", table, key, kind, columns, detail)


@pytest.fixture
async def archived(tmp_path):
    """CHAIN archived in polls of 37: full bundles 0 and 1, bundle 2 published to 599 (the checkpoint at 600)."""
    root = tmp_path / "archive"
    await archive(root, CHAIN, 37)
    return root


async def test_a_consistent_archive_verifies_every_entry_line_and_its_checkpoint(archived):
    verdict = await archive_verdict(archived, CHAIN)
    assert (verdict.counts(), verdict.problems) == (
        {"rows": 599 + 599 + 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 600, "stopped_at": None,
         "ok": True}, [])
    report = TenantReport(T, 600, {"archive": verdict})
    assert lines(report, None) == [f"OK tenant {T}: chain of 600 events; archive 1199 rows match the chain"]


async def test_a_deleted_entry_bundle_is_one_missing_file(archived):
    at(archived, "tile/entries/000").unlink()
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("entries", {"path": "tile/entries/000"}, "missing", (),
                                        "the archive has applied its chain to chain_seq 600, so it publishes "
                                        "chain_seq 1 to 256 here")]
    assert (verdict.rows, verdict.missing, verdict.ok) == (599 - 256 + 599 + 1, 1, False)
    assert lines(TenantReport(T, 600, {"archive": verdict}), None)[1] == (
        f"  archive tenant {T} entries path tile/entries/000: missing: the archive has applied its chain to "
        "chain_seq 600, so it publishes chain_seq 1 to 256 here; fix: move the named files aside, then rebuild the "
        "archive in place: stop the projectors, remove .runledger/<prefix>/partitions under RUNLEDGER_ARCHIVE_DIR, "
        "start them")


async def test_a_deleted_partial_version_the_checkpoint_needs_is_missing(archived):
    at(archived, "tile/entries/002.p/87").unlink()   # 002.p/37, of the checkpoint of size 549, is still there
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("entries", {"path": "tile/entries/002.p/87"}, "missing", (),
                                        "the archive has applied its chain to chain_seq 600, so it publishes "
                                        "chain_seq 513 to 599 here; its widest version holds 37")]
    assert (verdict.rows, verdict.missing) == (512 + 37 + 599 + 1, 1)


async def test_an_altered_sidecar_line_is_named_by_its_chain_seq(archived):
    path = at(archived, "events/001")
    path.write_bytes(path.read_bytes().replace(b'"note":"e266"', b'"note":"e267"'))
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("events", {"chain_seq": 266}, "mismatched", ("line",),
                                        "differs from the chain in line (line 10 of events/001)")]
    assert (verdict.rows, verdict.mismatched) == (1199, 1)


async def test_an_altered_entry_is_named_by_its_chain_seq(archived):
    flip(at(archived, "tile/entries/001"), 5 * 34 + 2 + 9)
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("entries", {"chain_seq": 262}, "mismatched", ("hash",),
                                        "differs from the chain in hash (entry 5 of tile/entries/001)")]


async def test_an_altered_tile_is_named_by_its_path_with_the_root_it_changes(archived):
    flip(at(archived, "tile/0/002.p/87"), 50 * 32 + 7)
    row = bytearray(leaf_row(CHAIN[:599]))
    row[(512 + 50) * 32 + 7] ^= 0x01
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [
        problem("tiles", {"path": "tile/0/002.p/87"}, "mismatched", (),
                "tile/0/002.p/87: hash 50 is not the hash of entry 50 of tile/entries/002.p/87 (chain_seq 563)"),
        problem("checkpoint", {"path": "checkpoint"}, "mismatched", (),
                f"checkpoint: the root of size 599 from the tiles is {root_b64(bytes(row), 599)}, but the checkpoint "
                f"signs {signed_root(600)}")]
    assert (verdict.rows, verdict.mismatched) == (1199, 2)


async def test_a_dropped_or_older_checkpoint_is_named(archived):
    note = at(archived, "checkpoint")
    note.unlink()
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("checkpoint", {"path": "checkpoint"}, "missing", (),
                                        "the archive has applied the checkpoint.signed at chain_seq 600 (size 599); "
                                        "no file publishes it")]
    assert (verdict.rows, verdict.missing) == (1198, 1)
    note.write_bytes(CHAIN[499]["payload"]["note"].encode())   # recorded on the chain, but older
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("checkpoint", {"path": "checkpoint"}, "mismatched", ("note",),
                                        "the note of chain_seq 500 (size 499), older than the checkpoint the "
                                        "archive has applied at chain_seq 600 (size 599)")]
    note.write_bytes(CHAIN[599]["payload"]["note"].encode().replace(b"\n599\n", b"\n598\n"))
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("checkpoint", {"path": "checkpoint"}, "mismatched", ("note",),
                                        "not the note of any checkpoint.signed of the chain")]


async def test_a_stray_file_and_files_beyond_the_chain_are_extra(archived):
    (archived / T / "notes.txt").write_bytes(b"x")
    verdict = await archive_verdict(archived, CHAIN[:590])   # the log lost its last 10 events, say
    assert [(p.table, p.key, p.kind) for p in verdict.problems] == (
        [("heads", {"chain_seq": 591}, "extra")] + [("entries", {"chain_seq": s}, "extra") for s in range(591, 600)]
        + [("events", {"chain_seq": s}, "extra") for s in range(591, 600)]
        + [("checkpoint", {"path": "checkpoint"}, "mismatched"), ("files", {"path": "notes.txt"}, "extra")])
    assert verdict.problems[1].detail == "no event of the chain makes this row (entry 78 of tile/entries/002.p/87)"


async def test_a_sweep_s_tombstones_are_no_problem_and_an_envelope_back_in_place_of_one_is(tmp_path):
    chain, family, swept_by = family_story()
    root = tmp_path / "archive"
    await archive(root, chain, 29)
    verdict = await archive_verdict(root, chain)
    assert (verdict.counts(), verdict.problems) == (
        {"rows": 359 + 359 + 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 385, "stopped_at": None,
         "ok": True}, [])
    path = at(root, "events/000")
    lines_ = path.read_bytes().splitlines(keepends=True)
    assert lines_[2] == tombstone_line(chain[2], swept_by)
    lines_[2] = jcs(chain[2]) + b"\n"   # the envelope the sweep removed, restored
    path.write_bytes(b"".join(lines_))
    verdict = await archive_verdict(root, chain)
    assert verdict.problems == [problem("events", {"chain_seq": 3}, "mismatched", ("line",),
                                        "differs from the chain in line (line 3 of events/000)")]


async def test_an_archive_behind_the_chain_is_lag_not_a_problem(tmp_path):
    root = tmp_path / "archive"
    await archive(root, CHAIN[:300], 64)
    verdict = await archive_verdict(root, CHAIN)
    assert (verdict.counts(), verdict.problems) == (
        {"rows": 299 + 299 + 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 300, "stopped_at": None,
         "ok": True}, [])
    assert lines(TenantReport(T, 600, {"archive": verdict}), None) == [
        f"OK tenant {T}: chain of 600 events; archive 599 rows match the chain",
        "  note: archive has applied chain_seq 1 to 300 of 600; the last 300 events are not applied yet (lag) and "
        "were not checked"]
    early = tmp_path / "early"
    await archive(early, CHAIN[:40], 40)   # no checkpoint, no full bundle: nothing is published yet
    verdict = await archive_verdict(early, CHAIN)
    assert ((early / T).exists(), verdict.counts()["rows"], verdict.ok, verdict.applied) == (False, 0, True, 40)


async def test_no_directory_where_the_head_publishes_files_is_missing(archived):
    shutil.rmtree(archived / T)
    verdict = await archive_verdict(archived, CHAIN)
    assert verdict.problems == [problem("directory", {"tenant_id": T}, "missing", (),
                                        "no directory of the tenant under the archive root; the archive has applied "
                                        "its chain to chain_seq 600, so it publishes chain_seq 1 to 599 and the "
                                        "checkpoint of size 599")]
    assert (verdict.rows, verdict.missing) == (0, 1)


async def test_files_a_poll_wrote_before_its_position_are_no_problem(tmp_path, monkeypatch):
    def lost(*args):
        raise Crash("killed before the position was written")

    root = tmp_path / "archive"
    await archive(root, CHAIN[:250], 250)
    writer = await ArchiveProjection(root, "test").open()
    monkeypatch.setattr(writer, "_commit", lost)
    with pytest.raises(Crash):
        await writer.apply([Batch(0, CHAIN[250:560], 560)])   # fills bundle 1, publishes the checkpoint of 549
    verdict = await archive_verdict(root, CHAIN)
    assert (verdict.counts(), verdict.problems) == (
        {"rows": 549 + 549 + 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 250, "stopped_at": None,
         "ok": True}, [])
    # and a sweep past the head whose tombstones a poll in progress wrote already
    chain, family, swept_by = family_story()
    swept = tmp_path / "swept"
    await archive(swept, chain[:320], 320)
    writer = await ArchiveProjection(swept, "test").open()
    monkeypatch.setattr(writer, "_commit", lost)
    with pytest.raises(Crash):
        await writer.apply([Batch(0, chain[320:330], 330)])
    assert at(swept, "events/000").read_bytes().splitlines(keepends=True)[2] == tombstone_line(chain[2], swept_by)
    verdict = await archive_verdict(swept, chain)
    assert (verdict.counts(), verdict.problems) == (
        {"rows": 319 + 319 + 1, "missing": 0, "extra": 0, "mismatched": 0, "applied": 320, "stopped_at": None,
         "ok": True}, [])


def test_a_structural_problem_keeps_hashes_and_paths_but_not_what_it_quotes_from_a_file():
    places = Places(ModelVerdict("archive"))
    places.fold("events/000 line 1 (chain_seq 1): tenant_id is 'beta', not 'acme'")
    places.fold("events/000 line 2 (chain_seq 2): the tombstone's hash \"it's\" is not 64 lowercase hex digits")
    places.fold("tile/0/000: hash 3 is not the hash of entry 3 of tile/entries/000 (chain_seq 4)")
    assert [(p.table, p.key, p.detail) for p in places.verdict.problems] == [
        ("events", {"chain_seq": 1}, "events/000 line 1 (chain_seq 1): tenant_id is …, not …"),
        ("events", {"chain_seq": 2}, "events/000 line 2 (chain_seq 2): the tombstone's hash … is not 64 lowercase "
                                     "hex digits"),
        ("tiles", {"path": "tile/0/000"}, "tile/0/000: hash 3 is not the hash of entry 3 of tile/entries/000 "
                                          "(chain_seq 4)")]


def test_the_structural_check_s_problems_are_named_as_the_comparison_names_places():
    assert [structural(m) for m in (
        "tile/0/001: missing", "tile/entries/000: missing", "checkpoint: missing",
        "events/001 line 10 (chain_seq 266): the envelope does not re-hash to its hash",
        "tile/entries/001: entry 5 (chain_seq 262) is 00, but line 6 of events/001 and hash 5 of tile/0/001 say 01",
        "tile/0/002.p/87: hash 50 is not the hash of entry 50 of tile/entries/002.p/87 (chain_seq 563)",
        "chain_seq 5: entry 4 of tile/entries/000 (00), line 5 of events/000 (01) and hash 4 of tile/0/000 disagree",
        "tile/0/junk: not a file of the tlog-tiles layout", "notes.txt: not part of a tenant's archive (checkpoint, "
        "tile/, events/)", "tile/1/001: beyond the tree of 512",
        "tile/0/002.p/37: missing (the checkpoint of size 549 needs it)")] == [
        ("tiles", {"path": "tile/0/001"}, "missing"), ("entries", {"path": "tile/entries/000"}, "missing"),
        ("checkpoint", {"path": "checkpoint"}, "missing"), ("events", {"chain_seq": 266}, "mismatched"),
        ("entries", {"chain_seq": 262}, "mismatched"), ("tiles", {"path": "tile/0/002.p/87"}, "mismatched"),
        ("entries", {"chain_seq": 5}, "mismatched"), ("files", {"path": "tile/0/junk"}, "extra"),
        ("files", {"path": "notes.txt"}, "extra"), ("tiles", {"path": "tile/1/001"}, "extra"),
        ("tiles", {"path": "tile/0/002.p/37"}, "missing")]


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
