"""record.md: the human-readable rendering of an evidence bundle (who did what when, decisions, approvals).

A pure function of the manifest (without its member digests), governance.json and the events, line by
line, so the offline verifier renders the bundle again and compares: a rendering that says anything its
signed events do not is refused. Sealed content stays sealed: it is shown as its key id, marked when
that key was destroyed by a shred.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from schemas.bundle_scope import SEALED_FIELDS, describe

OUTCOMES = {"run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "was cancelled",
            "run.force_failed": "was force-failed"}


def cell(text: str, limit: int = 240) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def value(v: Any, destroyed: frozenset[str]) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and v.keys() == SEALED_FIELDS:
        return f"[sealed, key {v['kid']}{' (destroyed)' if v['kid'] in destroyed else ''}]"
    if isinstance(v, dict) and v.keys() == {"withheld"}:
        return f"[withheld: {v['withheld']}]"
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def details(env: dict[str, Any], destroyed: frozenset[str]) -> str:
    p = env["payload"]
    if env["type"] == "checkpoint.signed":
        return f"size {p['size']}, root {p['root']}, key {p['key'].rsplit('+', 1)[0]}"
    return "; ".join(f"{k}: {value(v, destroyed)}" for k, v in p.items())


def decision(env: dict[str, Any], destroyed: frozenset[str]) -> str | None:
    """A sentence for a decision, an approval step or a run's outcome; None for other events."""
    p, agg, t = env["payload"], env["aggregate_id"], env["type"]

    def v(key: str) -> str:
        return value(p.get(key), destroyed)
    if t == "tool_call.policy_decided":
        return f"policy {v('policy_id')} v{v('policy_version')} decided {v('decision')} for tool call `{agg}`: {v('reason')}"
    if t == "tool_call.blocked":
        return f"tool call `{agg}` blocked: {v('reason')}"
    if t == "approval.requested":
        return (f"approval `{agg}` requested by {v('requested_by')} for {v('action')} ({v('risk_tier')} risk, "
                f"{v('required_approvals')} × {v('required_role')}, expires {v('expires_at')})")
    if t == "approval.vote_recorded":
        return f"{v('approver')} voted for approval `{agg}`: {v('reason')}"
    if t == "approval.granted":
        return f"approval `{agg}` granted by {', '.join(p.get('approvers') or [])}"
    if t == "approval.denied":
        return f"approval `{agg}` denied by {v('approver')}: {v('reason')}"
    if t == "approval.expired":
        return f"approval `{agg}` expired at {v('expired_at')}"
    if t in OUTCOMES:
        why = p.get("error", p.get("reason"))
        return f"run `{agg}` {OUTCOMES[t]}" + (f": {value(why, destroyed)}" if why is not None else "")
    return None


def governance_lines(g: dict[str, Any]) -> Iterator[str]:
    for h in g.get("holds", []):
        end = ("active" if h["state"] == "active" else
               f"released by {h['released_by']} at {h['released_at']} (chain_seq {h['released_seq']})")
        yield (f"- Legal hold `{h['hold_id']}` ({cell(h['matter'])}), scope `{value(h['scope'], frozenset())}`: "
               f"placed by {h['placed_by']} at {h['placed_at']} (chain_seq {h['placed_seq']}"
               f"{', platform' if h['platform'] else ''}); {end}.")
    for s in g.get("sweeps", []):
        yield (f"- Retention sweep at chain_seq {s['chain_seq']} ({s['record_class']}, {s['days']} days, policy "
               f"v{s['policy_version']}, cutoff {s['cutoff']}) removed run {', '.join(s['run_ids'])} from "
               f"{', '.join(s['stores'])}.")
    for s in g.get("shreds", []):
        yield (f"- Shred at chain_seq {s['chain_seq']}: subject {cell(s['subject'])}; data keys destroyed: "
               f"{', '.join(s['key_ids']) or 'none'}; content sealed under them stays ciphertext here.")
    if not any(g.get(k) for k in ("holds", "sweeps", "shreds")):
        yield "- No legal hold, retention sweep or shred touches this scope."


def render(head: dict[str, Any], governance: dict[str, Any], events: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The lines of record.md (without newlines)."""
    cp, counts, scope = head["checkpoint"], head["counts"], head["scope"]
    destroyed = frozenset(governance.get("destroyed_key_ids", []) if isinstance(governance, dict) else [])
    yield f"# Evidence bundle: {cell(describe(scope))} of tenant {head['tenant']}"
    yield ""
    yield f"- Exported at {head['exported_at']} from the chain of tenant `{head['tenant']}` (log `{head['origin']}`)."
    yield (f"- Checkpoint: size {cp['size']} (chain_seq 1..{cp['size']}), root `{cp['root']}`, signed by "
           f"`{cp['key'].rsplit('+', 1)[0]}`, recorded at chain_seq {cp['chain_seq']}.")
    yield (f"- {counts['scope_events']} events of the scope and {counts['governance_events']} governance events "
           f"touching it; {head['uncovered']} later events of the chain were not yet covered by a checkpoint "
           f"and are not included.")
    yield "- Check it offline: `runledger verify-bundle FILE --key <the log's vkey>` (docs/evidence.md)."
    yield ""
    yield "## Governance"
    yield ""
    yield from governance_lines(governance if isinstance(governance, dict) else {})
    yield ""
    yield "## Audit trail"
    yield ""
    yield "| chain_seq | recorded at | actor | event | aggregate | details |"
    yield "|---:|---|---|---|---|---|"
    decisions = []
    for env in events:
        actor = env["actor"]
        who = f"{actor['subject']} ({', '.join(actor['roles'])})"
        yield (f"| {env['chain_seq']} | {env['recorded_at']} | {cell(who)} | {env['type']} | "
               f"{env['aggregate_type']} `{env['aggregate_id']}` | {cell(details(env, destroyed))} |")
        if (sentence := decision(env, destroyed)) is not None:
            decisions.append(f"- {env['recorded_at']} (chain_seq {env['chain_seq']}) {cell(actor['subject'])}: "
                             f"{cell(sentence, 600)}")
    yield ""
    yield "## Decisions, approvals and outcomes"
    yield ""
    yield from decisions or ["- None in this scope."]
