"""The offline verifier's checks of a bundle's content (schemas/bundle.py runs them; docs/evidence.md).

Each problem goes to the report with its place: `chain_seq N: …`, `proof for chain_seq N: …`, `record.md
line N: …`, `governance.json: …`, `consistency from size N: …`.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Iterator

from schemas.bundle import GOVERNANCE_TYPES, Bundle, BundleUnreadable, Report, jcs
from schemas.bundle_render import render
from schemas.bundle_scope import Selector, Summary, fold_governance
from schemas.envelope import GENESIS_HASH, compute_hash, decode
from schemas.merkle import ProofError, check_consistency, check_inclusion, leaf_hash
from schemas.notes import Checkpoint, NoteError, Verifier

ENVELOPE = {"event_id": str, "tenant_id": str, "chain_seq": int, "prev_hash": str, "hash": str, "type": str,
            "schema_version": int, "aggregate_type": str, "aggregate_id": str, "aggregate_version": int,
            "occurred_at": str, "recorded_at": str, "actor": dict, "payload": dict}
SCOPE_FIELDS = {"tenant": (), "run": ("id",), "approval": ("id",), "actor": ("subject",),
                "time_range": ("start", "end"), "query": ("query",)}


def shape(env: Any) -> str | None:
    if not isinstance(env, dict) or type(env.get("chain_seq")) is not int:
        return "not an envelope (a JSON object with a chain_seq)"
    bad = [k for k, t in ENVELOPE.items() if type(env.get(k)) is not t]
    actor = env.get("actor") or {}
    if not isinstance(actor.get("subject"), str) or not isinstance(actor.get("roles"), list):
        bad.append("actor")
    return f"not an envelope: {', '.join(bad)} missing or of the wrong type" if bad else None


def events_of(b: Bundle, r: Report) -> Iterator[dict]:
    """Yield each well-formed event, after checking its form, hash, link and inclusion proof."""
    tenant, size, prev_seq, prev_hash = b.manifest["tenant"], r.size, 0, None
    proofs = b.lines("proofs.jsonl")
    for number, line in enumerate(b.lines("events.jsonl"), 1):
        proof_line = next(proofs, None)
        try:
            env = decode(line)
        except ValueError:
            env = None
        seq = env.get("chain_seq") if isinstance(env, dict) else None
        r.events += 1
        if problem := shape(env):
            r.fail(f"{f'chain_seq {seq}' if type(seq) is int else f'events.jsonl line {number}'}: {problem}")
            continue
        if jcs(env) + b"\n" != line:
            r.fail(f"chain_seq {seq}: the line is not RFC 8785 canonical JSON")
        if env["tenant_id"] != tenant:
            r.fail(f"chain_seq {seq}: tenant_id is {env['tenant_id']!r}, not {tenant!r}")
        if not prev_seq < seq <= size:
            r.fail(f"chain_seq {seq}: out of order (after {prev_seq}) or beyond the checkpoint's size {size}")
        if compute_hash(env) != env["hash"]:
            r.fail(f"chain_seq {seq}: hash does not recompute")
        if seq == prev_seq + 1 and env["prev_hash"] != (prev_hash if prev_seq else GENESIS_HASH):
            r.fail(f"chain_seq {seq}: prev_hash does not link to chain_seq {prev_seq}" if prev_seq
                   else f"chain_seq {seq}: prev_hash of the first event is not 64 zeros")
        prev_seq, prev_hash = seq, env["hash"]
        check_proof(proof_line, env, size, r.root, r)
        yield env
    if next(proofs, None) is not None:
        r.fail("proofs.jsonl: more proofs than events")


def check_proof(line: bytes | None, env: dict, size: int, root: bytes, r: Report) -> None:
    seq = env["chain_seq"]
    try:
        if line is None:
            raise ProofError("missing (proofs.jsonl ends early)")
        proof = json.loads(line)
        if proof["chain_seq"] != seq:
            raise ProofError(f"out of step with events.jsonl: the proof here is for chain_seq {proof['chain_seq']}")
        if (proof["leaf_index"], proof["tree_size"]) != (seq - 1, size):
            raise ProofError(f"it is for leaf {proof['leaf_index']} of a tree of {proof['tree_size']}, "
                             f"not leaf {seq - 1} of {size}")
        check_inclusion(leaf_hash(bytes.fromhex(env["hash"])), seq - 1, size,
                        [bytes.fromhex(h) for h in proof["hashes"]], root)
    except (ValueError, KeyError, TypeError) as error:   # ProofError is a ValueError
        r.fail(f"proof for chain_seq {seq}: {error}")


def check_content(b: Bundle, governance: Any, r: Report) -> None:
    """Events and proofs; record.md against a fresh rendering; governance.json against a fresh fold."""
    scope = b.manifest["scope"]
    if not isinstance(scope, dict) or any(f not in scope for f in SCOPE_FIELDS.get(scope.get("kind"), ("kind",))):
        raise BundleUnreadable(f"manifest.json: scope {scope!r} is not one this verifier knows")
    selector, summary, records, others = Selector(scope), Summary(), [], []
    whole, last = scope["kind"] == "tenant", 0

    def watched() -> Iterator[dict]:
        nonlocal last
        for env in events_of(b, r):
            if whole and env["chain_seq"] > last + 1:
                r.fail(f"chain_seq {env['chain_seq']}: a tenant bundle holds every event, and "
                       f"chain_seq {last + 1}..{env['chain_seq'] - 1} are missing")
            last = max(last, env["chain_seq"])
            if selector.wants(env):
                summary.add(env)
            else:
                others.append(env["chain_seq"])
            if env["type"] in GOVERNANCE_TYPES:
                records.append(env)
            yield env
    events, record = watched(), b.lines("record.md")
    head = {k: v for k, v in b.manifest.items() if k != "members"}
    try:
        for number, mine in enumerate(render(head, governance, events), 1):
            if next(record, b"") != (mine + "\n").encode():
                r.fail(f"record.md line {number}: differs from the rendering of the bundle's events")
                break
        else:
            if next(record, None) is not None:
                r.fail("record.md: has lines past the end of the rendering")
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        r.fail(f"record.md: the bundle cannot be rendered ({type(error).__name__}: {error})")
    for _ in events:
        pass
    if whole and last < r.size:
        r.fail(f"events.jsonl: a tenant bundle holds every event, and it ends at chain_seq {last}, before the "
               f"checkpoint's size {r.size}")
    try:
        folded, cited = fold_governance(records, summary, whole)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        r.fail(f"governance: the bundle's governance events cannot be folded ({type(error).__name__}: {error})")
        return
    for section, entries in folded.items():
        if not isinstance(governance, dict) or governance.get(section) != entries:
            r.fail(f"governance.json: {section} differ from those folded from the bundle's events")
    context = {seq for seq in selector.context if seq not in cited}
    for seq in others:
        if seq not in cited and seq not in context:
            r.fail(f"chain_seq {seq}: neither of the scope nor a governance record touching it"
                   + (" nor the request a selected event of the query matched through" if scope["kind"] == "query"
                      else ""))
    context &= set(others)
    counts = b.manifest["counts"]
    expected = [("events", r.events), ("scope_events", summary.count), ("governance_events", len(others) - len(context))]
    if scope["kind"] == "query":
        expected.append(("context_events", len(context)))
    for name, actual in expected:
        if counts.get(name) != actual:
            r.fail(f"manifest: counts.{name} is {counts.get(name)}, the bundle has {actual}")
    if b.manifest.get("destroyed_key_ids") != folded["destroyed_key_ids"]:
        r.fail("manifest: destroyed_key_ids differ from the shreds folded from the bundle's events")


def check_earlier(b: Bundle, r: Report) -> None:
    """Each earlier checkpoint in checkpoints.jsonl: its note, if any, and its consistency proof to ours."""
    for number, line in enumerate(b.lines("checkpoints.jsonl"), 1):
        place = f"checkpoints.jsonl line {number}"
        try:
            e = json.loads(line)
            old_size, old_root = e["size"], base64.b64decode(e["root"], validate=True)
            place = f"consistency from size {old_size}"
            if e.get("note") is not None:
                cp, _ = Checkpoint.open(e["note"].encode(), [Verifier.from_vkey(e["key"])], b.manifest["origin"])
                if (cp.size, cp.root) != (old_size, old_root):
                    raise ProofError(f"its note signs size {cp.size}, root {base64.b64encode(cp.root).decode()}")
            check_consistency(old_size, r.size, old_root, r.root, [bytes.fromhex(h) for h in e["proof"]])
            r.earlier.append(e)
        except (ValueError, KeyError, TypeError, AttributeError, NoteError) as error:
            r.fail(f"{place}: {error}")
