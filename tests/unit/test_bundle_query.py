"""A query copy: an evidence bundle of exactly the events a discovery query returns (the audit rows equal to
every filter), with the *.requested events the selection matched through, verified offline like any bundle."""
import json
from pathlib import Path

import pytest

from projectors.audit import COLUMNS, AuditProjection
from schemas.bundle import MANIFEST, verify_bundle
from schemas.bundle_scope import QUERY_FILTERS, parse_scope
from tests.unit.test_bundle import KEY, export, lines, members, rewrite, sizes, story

AUDIT = {name: COLUMNS.index(column) for name, column in (
    ("actor", "actor_subject"), ("type", "type"), ("run_id", "run_id"), ("tool", "tool"), ("decision", "decision"),
    ("aggregate_id", "aggregate_id"), ("tool_call_id", "tool_call_id"), ("approval_id", "approval_id"))}


def audit_rows(chain: list[dict]) -> list[tuple[dict, tuple]]:
    """Each envelope with the audit row the audit projection makes of it (its parents as the projection finds them)."""
    parents, out = {}, []
    for env in chain:
        if env["aggregate_type"] in ("tool_call", "approval") and env["type"].endswith(".requested"):
            parents[(env["tenant_id"], env["aggregate_id"])] = (env["payload"].get("run_id"), env["payload"].get("tool"))
        out.append((env, AuditProjection.row(env, parents)))
    return out


def discovered(chain: list[dict], size: int, **filters) -> list[int]:
    """The chain_seqs (up to `size`) a discovery query with these filters returns, from the audit rows."""
    return [env["chain_seq"] for env, row in audit_rows(chain)
            if env["chain_seq"] <= size and all(row[AUDIT[k]] == v for k, v in filters.items())]


@pytest.fixture(scope="module")
def told():
    return story()


def query(**filters) -> dict:
    return parse_scope("query:" + "&".join(f"{k}={v}" for k, v in filters.items()))


@pytest.mark.parametrize("pick", [
    lambda ids: {"run_id": ids["run"]},
    lambda ids: {"tool": "shell"},
    lambda ids: {"tool": "shell", "type": "tool_call.approved"},
    lambda ids: {"decision": "REQUIRE_APPROVAL"},
    lambda ids: {"approval_id": ids["approval"]},
    lambda ids: {"tool_call_id": ids["call"], "actor": "alice"},
    lambda ids: {"actor": "agent-1", "run_id": ids["other"]},
])
def test_a_query_copy_holds_exactly_what_discovery_returns_and_verifies(told, tmp_path, pick):
    h, ids = told
    filters = pick(ids)
    path = export(h.log, tmp_path, query(**filters))
    m = json.loads(members(path)[MANIFEST])
    size = m["checkpoint"]["size"]
    assert size == sizes(h.log)[-1]
    expected = discovered(h.log, size, **filters)
    events = lines(path, "events.jsonl")
    context = [e["chain_seq"] for e in events if e["chain_seq"] not in expected and e["type"].endswith(".requested")]
    governance = [e["chain_seq"] for e in events if e["chain_seq"] not in expected and e["chain_seq"] not in context]
    assert ([e["chain_seq"] for e in events if e["chain_seq"] in expected], m["counts"]["scope_events"]) == (
        expected, len(expected))
    assert (m["counts"]["context_events"], m["counts"]["governance_events"]) == (len(context), len(governance))
    assert {h.log[s - 1]["type"] for s in governance} <= {"legal_hold.placed", "legal_hold.released"}
    report = verify_bundle(path, KEY)
    assert (report.problems, report.events) == ([], len(events))


def test_a_filter_on_a_calls_tool_brings_its_request_as_context_and_the_copy_fails_without_it(told, tmp_path):
    h, ids = told
    path = export(h.log, tmp_path, query(tool="shell", type="tool_call.approved"))
    events = lines(path, "events.jsonl")
    requested, approved = events
    assert (requested["type"], requested["aggregate_id"], approved["type"]) == (
        "tool_call.requested", ids["call"], "tool_call.approved")
    assert json.loads(members(path)[MANIFEST])["counts"]["context_events"] == 1
    # Take the request out (and its proof, and fix every digest): the approval no longer shows it is a shell call
    def drop_first(data: bytes) -> bytes:
        return b"".join(data.splitlines(keepends=True)[1:])
    rewrite(path, "events.jsonl", drop_first)
    rewrite(path, "proofs.jsonl", drop_first)
    problems = verify_bundle(path, KEY).problems
    assert f"chain_seq {approved['chain_seq']}: neither of the scope nor a governance record touching it nor the " \
           f"request a selected event of the query matched through" in problems


def test_query_scopes_parse_to_what_record_export_takes():
    from domain.scopes import ExportScope
    scope = parse_scope("query:decision=DENY&tool=db.drop_table&since=2026-01-01T00:00:00Z")
    assert scope == {"kind": "query", "query": {**{k: None for k in QUERY_FILTERS}, "decision": "DENY",
                                                "tool": "db.drop_table"},
                     "start": "2026-01-01T00:00:00.000000Z", "end": None}
    dumped = ExportScope.model_validate(scope).model_dump(mode="json")
    assert (dumped["kind"], dumped["query"], dumped["start"]) == ("query", scope["query"], "2026-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="at least one filter or a time bound"):
        ExportScope.model_validate({"kind": "query", "query": {}})


def test_a_query_with_no_match_up_to_the_checkpoint_is_refused_naming_it(told, tmp_path):
    from schemas.bundle_write import ExportRefused
    h, _ = told
    with pytest.raises(ExportRefused, match="^no events of query decision=THROTTLE in tenant acme"):
        export(h.log, tmp_path, query(decision="THROTTLE"))
    assert [p.name for p in Path(tmp_path).iterdir()] == ["b.tar.d"] or list(Path(tmp_path).iterdir()) == []


def test_discovery_searches_every_decision_a_call_can_record():
    from typing import get_args
    from domain.tool_call import DECISIONS
    from queries.api.routes_discovery import Decision
    assert get_args(Decision) == DECISIONS
