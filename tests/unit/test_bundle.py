"""Evidence bundles from real domain chains (tests/unit/harness.py, signed checkpoints): written by the pure
writer, checked by the offline verifier; every region tampered with in turn is refused at its exact place, a
later bundle proves it extends an earlier one, and a forked chain is refused."""
import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from domain.evidence import CheckpointSigner
from domain.retention import Rules
from schemas import merkle
from schemas.bundle import MANIFEST, verify_bundle, verify_extends
from schemas.bundle_scope import parse_scope
from schemas.bundle_write import write_bundle
from schemas.envelope import GENESIS_HASH, seal
from schemas.notes import Checkpoint, Signer, Verifier
from tests.unit.harness import ADMIN, Harness, approver
from tests.unit.test_checkpoints import sign

SEED, OTHER = bytes(range(32)), bytes(range(1, 33))
ORIGIN, AT = "runledger/test/acme", "2026-11-22T13:00:00.000000Z"
SIGNER = Signer(ORIGIN, SEED)
KEY = Verifier.from_vkey(SIGNER.vkey)
KEY_NAME = f"{ORIGIN}+{KEY.key_id:08x}"


def story() -> tuple[Harness, dict]:
    """A run with a gated tool call, an approval, a cost and a hold; another run and hold; two checkpoints."""
    h = Harness()
    h.ledger.signer, h.ledger.rules = CheckpointSigner("test", SEED), Rules({"audit": 0, "operational": 0})
    h.activate()  # the envelope that decides its tool call: chain_seq 1-3
    run = h.running_run()
    call = h.tool_call(run, "REQUIRE_APPROVAL")
    approval = h.approval(run, call)
    h.ok({"type": "GrantApproval", "approval_id": approval}, approver("alice"))
    h.ok({"type": "RecordCost", "run_id": run, "provider": "o", "model": "m", "amount_micros": 5, "currency": "USD"})
    other = h.running_run()
    hold = h.ok({"type": "PlaceLegalHold", "matter": "Doe v. Acme", "reason": "r", "scope": {"kind": "run", "run_id": run}}, ADMIN)
    other_hold = h.ok({"type": "PlaceLegalHold", "matter": "other", "reason": "r", "scope": {"kind": "run", "run_id": other}}, ADMIN)
    assert sign(h)["status"] == "accepted"
    h.ok({"type": "CompleteRun", "run_id": run})
    assert sign(h)["status"] == "accepted"
    h.ok({"type": "StartStep", "run_id": other, "kind": "llm", "name": "late"})
    return h, {"run": run, "call": call, "approval": approval, "other": other, "hold": hold,
               "other_hold": other_hold}


def sizes(chain: list[dict]) -> list[int]:
    return [e["payload"]["size"] for e in chain if e["type"] == "checkpoint.signed"]


def export(chain: list[dict], tmp_path: Path, scope: dict, name: str = "b.tar", **kw) -> Path:
    write_bundle(chain, "acme", scope, tmp_path / name, tmp_path / f"{name}.d", AT, **kw)
    return tmp_path / name


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {info.name: tar.extractfile(info).read() for info in tar.getmembers()}


def lines(path: Path, member: str) -> list[dict]:
    return [json.loads(line) for line in members(path)[member].splitlines()]


def flip(path: Path, member: str, needle: bytes, skip: int = 0) -> int:
    """Change the byte `skip` bytes after the first `needle` in a member, in place in the file; its offset there."""
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    at = data.index(needle, info.offset_data, info.offset_data + info.size) + len(needle) + skip
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    path.write_bytes(bytes(data))
    return at - info.offset_data


def rewrite(path: Path, member: str, change, fix_manifest: bool = True) -> None:
    """Rewrite one member as a forger would, updating its digest in the manifest."""
    parts = members(path)
    parts[member] = change(parts[member])
    if fix_manifest:
        manifest = json.loads(parts[MANIFEST])
        manifest["members"][member] = {"sha256": hashlib.sha256(parts[member]).hexdigest(), "bytes": len(parts[member])}
        parts[MANIFEST] = json.dumps(manifest, indent=2).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in parts.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def forge(chain: list[dict], signer: Signer, change) -> list[dict]:
    """The chain with change(index, body) applied, re-hashed from there and every checkpoint re-signed."""
    out: list[dict] = []
    for index, env in enumerate(chain):
        body = json.loads(json.dumps({k: v for k, v in env.items() if k != "hash"}))
        change(index, body)
        if body["type"] == "checkpoint.signed":
            size = body["payload"]["size"]
            root = merkle.root([bytes.fromhex(e["hash"]) for e in out[:size]])
            body["payload"].update(root=base64.b64encode(root).decode(), key=signer.vkey,
                                   note=Checkpoint(signer.name, size, root).sign([signer]).decode())
        body["prev_hash"] = out[-1]["hash"] if out else GENESIS_HASH
        out.append(seal(body))
    return out


def test_a_run_bundle_holds_its_family_up_to_the_latest_checkpoint_and_verifies_offline(tmp_path):
    h, ids = story()
    path = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]})
    events, m = lines(path, "events.jsonl"), json.loads(members(path)[MANIFEST])
    assert [(e["chain_seq"], e["type"]) for e in events] == [
        (4, "run.requested"), (5, "run.started"), (6, "tool_call.requested"), (7, "tool_call.policy_decided"),
        (8, "approval.requested"), (9, "run.waiting_for_approval"), (10, "approval.vote_recorded"),
        (11, "approval.granted"), (12, "tool_call.approved"), (13, "run.approval_resolved"),
        (15, "budget.cost_recorded"), (18, "legal_hold.placed"), (22, "run.succeeded")]
    assert events == [json.loads(json.dumps(dict(h.log[e["chain_seq"] - 1]))) for e in events]
    assert (sizes(h.log), m["checkpoint"]["chain_seq"], m["uncovered"]) == ([19, 22], 23, 2)
    assert (m["counts"], m["scope"]) == ({"events": 13, "scope_events": 12, "governance_events": 1, "checkpoints": 1},
                                         {"kind": "run", "id": ids["run"]})
    assert [(x["hold_id"], x["state"]) for x in json.loads(members(path)["governance.json"])["holds"]] == [
        (ids["hold"], "active")]
    assert [(p["chain_seq"], p["leaf_index"], p["tree_size"]) for p in lines(path, "proofs.jsonl")] == [
        (e["chain_seq"], e["chain_seq"] - 1, 22) for e in events]
    assert [c["size"] for c in lines(path, "checkpoints.jsonl")] == [19]
    report = verify_bundle(path, KEY)
    assert (report.problems, report.warnings, report.events, report.size, report.key) == ([], [], 13, 22, KEY_NAME)
    unkeyed = verify_bundle(path)
    assert (unkeyed.problems, unkeyed.warnings[0].split(" the bundle itself")[0]) == (
        [], f"warning: the key {KEY_NAME} came from")


def test_each_scope_kind_selects_exactly_its_events(tmp_path):
    h, ids = story()
    size = sizes(h.log)[-1]
    for scope, wanted in (({"kind": "approval", "id": ids["approval"]}, lambda e: e["aggregate_id"] == ids["approval"]),
                          ({"kind": "actor", "subject": "alice"}, lambda e: e["actor"]["subject"] == "alice"),
                          ({"kind": "tenant"}, lambda e: True)):
        path = export(h.log, tmp_path, scope, f"{scope['kind']}.tar")
        assert [e["chain_seq"] for e in lines(path, "events.jsonl")] == [
            e["chain_seq"] for e in h.log[:size] if wanted(e) or e["type"] == "legal_hold.placed"
            and (scope["kind"] == "tenant" or e["aggregate_id"] == ids["hold"])]
        assert verify_bundle(path, KEY).problems == []
    h.advance(3600)
    late = h.running_run()
    sign(h)
    path = export(h.log, tmp_path, parse_scope("time:2026-11-22T12:30:00Z/2026-11-22T15:00:00+01:00"), "time.tar")
    assert {e["aggregate_id"] for e in lines(path, "events.jsonl")} == {late}
    assert verify_bundle(path, KEY).problems == []


REGIONS = [  # member, the bytes after which one byte is changed, the problems that must be named (prefixes)
    ("events.jsonl", b'"agent_id":"', ["manifest: events.jsonl digest mismatch", "chain_seq 4: hash does not recompute",
                                      "record.md line {row1}: differs from the rendering of the bundle's events"]),
    ("proofs.jsonl", b'"hashes":["', ["manifest: proofs.jsonl digest mismatch", "proof for chain_seq 4: inclusion of "
                                     "leaf 3 in the tree of 22: the proof leads to root "]),
    ("checkpoint.note", "— runledger/test/acme ".encode() + b"\0" * 10, [
        "manifest: checkpoint.note digest mismatch", "manifest: the checkpoint note differs from checkpoint.note",
        f"checkpoint: signature does not verify under {KEY_NAME}"]),
    ("manifest.json", b'"root": "', ["manifest: checkpoint size/root (22, {root}", "record.md line 4: differs"]),
    ("record.md", b"granted by ", ["manifest: record.md digest mismatch",
                                   "record.md line {line}: differs from the rendering of the bundle's events"]),
    ("governance.json", b'"matter":"', ["manifest: governance.json digest mismatch", "record.md line 10: differs",
                                       "governance.json: holds differ from those folded from the bundle's events"]),
    ("checkpoints.jsonl", b'"proof":["', ["manifest: checkpoints.jsonl digest mismatch",
                                         "consistency from size 19: old tree of 19: the proof leads to root "]),
]


@pytest.mark.parametrize("member, needle, named", REGIONS, ids=[r[0] for r in REGIONS])
def test_one_byte_changed_in_any_region_is_refused_at_its_place(tmp_path, member, needle, named):
    h, ids = story()
    path = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]})
    before = members(path)
    record = before["record.md"].split(b"\n")
    at = flip(path, member, needle.rstrip(b"\0"), len(needle) - len(needle.rstrip(b"\0")))
    where = {"row1": 1 + next(i for i, line in enumerate(record) if line.startswith(b"| 4 |")),
             "line": 1 + before[member][:at].count(b"\n"),
             "root": "1" if json.loads(before["manifest.json"])["checkpoint"]["root"][0] == "0" else "0"}
    problems = verify_bundle(path, KEY).problems
    for message in (m.format(**where) for m in named):
        assert [p for p in problems if p.startswith(message)] != [], (message, problems)
    assert len(problems) == len(named), problems


def test_a_forger_who_fixes_the_digests_is_still_caught_at_the_event(tmp_path):
    h, ids = story()
    path = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]})
    row = "record.md line 16: differs from the rendering of the bundle's events"
    rewrite(path, "events.jsonl", lambda data: data.replace(b'"agent_id":"a"', b'"agent_id":"b"', 1))
    assert verify_bundle(path, KEY).problems == ["chain_seq 4: hash does not recompute", row]

    def rehash(data: bytes) -> bytes:
        first, rest = data.split(b"\n", 1)
        env = json.loads(first)
        env["payload"]["agent_id"] = "b"
        return json.dumps(dict(seal({k: v for k, v in env.items() if k != "hash"})), sort_keys=True,
                          separators=(",", ":")).encode() + b"\n" + rest
    path = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]}, "c.tar")
    rewrite(path, "events.jsonl", rehash)
    problems = verify_bundle(path, KEY).problems
    assert problems[0].startswith("proof for chain_seq 4: inclusion of leaf 3 in the tree of 22: the proof leads to root ")
    assert problems[1:] == [row, "chain_seq 5: prev_hash does not link to chain_seq 4"]


def test_an_event_left_out_of_a_tenant_bundle_is_named(tmp_path):
    h, _ = story()
    path = export(h.log, tmp_path, {"kind": "tenant"})
    for member in ("events.jsonl", "proofs.jsonl"):
        rewrite(path, member, lambda data: b"".join(data.splitlines(keepends=True)[:4] + data.splitlines(keepends=True)[5:]))
    assert verify_bundle(path, KEY).problems == [
        "chain_seq 6: a tenant bundle holds every event, and chain_seq 5..5 are missing",
        "record.md line 21: differs from the rendering of the bundle's events",  # the row of 5
        "manifest: counts.events is 22, the bundle has 21", "manifest: counts.scope_events is 22, the bundle has 21"]


def test_a_later_bundle_proves_it_extends_an_earlier_one(tmp_path):
    h, ids = story()
    first = next(i for i, e in enumerate(h.log) if e["type"] == "checkpoint.signed") + 1
    old = export(h.log[:first], tmp_path, {"kind": "run", "id": ids["run"]}, "old.tar")
    new = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]}, "new.tar", since_size=3)
    assert [(c["size"], c["note"] is None) for c in lines(new, "checkpoints.jsonl")] == [(3, True), (19, False)]
    report = verify_extends(old, new, KEY)
    assert (report.problems, report.size, verify_bundle(old, KEY).size) == ([], 22, 19)
    assert verify_extends(old, old).problems == []
    assert verify_extends(new, old, KEY).problems == [
        "extends: the old bundle's checkpoint (size 22) is larger than the new one's (19)"]
    rewrite(new, "checkpoints.jsonl", lambda data: data.split(b"\n", 1)[0] + b"\n")
    assert verify_extends(old, new, KEY).problems == [
        "fork or gap: the new bundle carries no consistency proof from size 19 (the old bundle's checkpoint) to size 22"]


def test_a_forked_chain_does_not_extend_the_bundle_taken_before_it(tmp_path):
    h, ids = story()
    first = next(i for i, e in enumerate(h.log) if e["type"] == "checkpoint.signed") + 1
    size = h.log[first - 1]["payload"]["size"]
    old = export(h.log[:first], tmp_path, {"kind": "tenant"}, "old.tar")

    def rewrite_first(index: int, body: dict) -> None:
        if index == 0:
            body["payload"]["agent_id"] = "someone-else"
    other_key = forge(h.log, Signer(ORIGIN, OTHER), rewrite_first)
    forged = export(other_key, tmp_path, {"kind": "tenant"}, "forged.tar")
    other_id = Verifier.from_vkey(Signer(ORIGIN, OTHER).vkey).key_id
    assert verify_bundle(forged).problems == []              # self-consistent: only a trusted key tells
    forged_root = [c for c in lines(forged, "checkpoints.jsonl") if c["size"] == size][0]["root"]
    old_root = json.loads(members(old)[MANIFEST])["checkpoint"]["root"]
    fork = f"fork: at size {size} the new bundle's tree has root {forged_root}, the old bundle's checkpoint signs {old_root}"
    assert verify_extends(old, forged).problems == [
        f"extends: the checkpoints are signed by different keys (old {SIGNER.vkey}, new {Signer(ORIGIN, OTHER).vkey}); "
        f"pass --key to check both against one trusted key", fork]
    assert verify_extends(old, forged, KEY).problems[0] == (
        f"new: checkpoint: signature does not verify under {KEY_NAME} (signed by {ORIGIN}+{other_id:08x})")
    same_key = export(forge(h.log, SIGNER, rewrite_first), tmp_path, {"kind": "tenant"}, "same-key.tar")
    assert (verify_bundle(same_key, KEY).problems, verify_extends(old, same_key, KEY).problems) == ([], [fork])
    same_size = export(forge(h.log[:first], SIGNER, rewrite_first), tmp_path, {"kind": "tenant"}, "same-size.tar")
    assert verify_extends(old, same_size, KEY).problems == [
        f"fork: both checkpoints are of size {size} but their roots differ (old {old_root}, new {forged_root})"]


def test_governance_touching_the_scope_is_folded_and_shredded_content_stays_ciphertext(tmp_path):
    h, ids = story()
    for hold in (ids["hold"], ids["other_hold"]):
        h.ok({"type": "ReleaseLegalHold", "hold_id": hold, "reason": "settled"}, ADMIN)
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 0}, ADMIN)
    h.advance(10)
    assert h.send({"type": "SweepRetention", "record_class": "operational"}, ADMIN)["status"] == "accepted"
    h.ok({"type": "ShredSubject", "subject": "agent-1", "reason": "erasure request"}, ADMIN)
    sign(h)
    sealed = {"alg": "A256GCM", "kid": "k-agent-1", "iv": "AAAAAAAAAAAAAAAA", "ct": "c2VjcmV0"}

    def with_keys(index: int, body: dict) -> None:
        if index == 3:  # run.requested, after the envelope's three events
            body["payload"]["labels"] = sealed
        if body["type"] == "retention.subject_shredded":
            body["payload"]["key_ids"] = ["k-agent-1"]
    path = export(forge(h.log, SIGNER, with_keys), tmp_path, {"kind": "run", "id": ids["run"]})
    governance, m = json.loads(members(path)["governance.json"]), json.loads(members(path)[MANIFEST])
    assert [(x["hold_id"], x["state"], x["released_by"]) for x in governance["holds"]] == [(ids["hold"], "released", "root")]
    assert [s["run_ids"] for s in governance["sweeps"]] == [[ids["run"]]]
    assert [(s["subject"], s["key_ids"], s["in_bundle"]) for s in governance["shreds"]] == [
        ("agent-1", ["k-agent-1"], ["k-agent-1"])]
    assert (m["destroyed_key_ids"], lines(path, "events.jsonl")[0]["payload"]["labels"]) == (["k-agent-1"], sealed)
    assert "labels: [sealed, key k-agent-1 (destroyed)]" in members(path)["record.md"].decode()
    assert verify_bundle(path, KEY).problems == []
