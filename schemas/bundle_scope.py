"""What an evidence bundle holds: its scope, the events the scope selects, and the governance touching them.

Pure functions of envelopes in chain order, used alike by the writer (over the whole chain) and the
offline verifier (over the bundle's own events), so both fold the same governance state.
"""
from __future__ import annotations

import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

SCOPE_USAGE = ("run:<uuid>, approval:<uuid>, actor:<subject>, time:<start>/<end>, "
               "query:<filter>=<value>&... (a discovery query's results) or tenant")
# A query scope's filters, as discovery's (queries/discovery.py FILTERS): each an audit row column; since/until
# bound recorded_at. run_id and tool of a tool call's or approval's later events come from its *.requested.
QUERY_FILTERS = ("actor", "type", "run_id", "tool", "decision", "aggregate_id", "tool_call_id", "approval_id")
UUID_FILTERS = frozenset({"run_id", "aggregate_id", "tool_call_id", "approval_id"})
PARENT_KINDS = ("tool_call", "approval")
SEALED_FIELDS = frozenset({"alg", "kid", "iv", "ct"})


class ScopeError(ValueError):
    """A scope that cannot be exported; the message names the problem."""


def instant(text: str) -> str:
    """An RFC 3339 time with an offset, in the envelopes' form (UTC, microseconds, Z)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ScopeError(f"{text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise ScopeError(f"{text!r} has no UTC offset (write e.g. 2026-01-01T00:00:00Z)")
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_scope(text: str) -> dict[str, Any]:
    """The ExportScope of `run:<uuid>`, `approval:<uuid>`, `actor:<subject>`, `time:<start>/<end>`, `tenant`."""
    kind, sep, arg = text.partition(":")
    if kind == "tenant" and not sep:
        return {"kind": "tenant"}
    if kind in ("run", "approval"):
        try:
            return {"kind": kind, "id": str(uuid.UUID(arg))}
        except ValueError:
            raise ScopeError(f"{kind} scope: {arg!r} is not a UUID") from None
    if kind == "actor":
        if not 1 <= len(arg) <= 200 or any(c < " " for c in arg):
            raise ScopeError(f"actor scope: {arg[:80]!r} is not a subject (1-200 characters, no control characters)")
        return {"kind": "actor", "subject": arg}
    if kind == "time":
        start, slash, end = arg.partition("/")
        if not slash:
            raise ScopeError(f"time scope: {arg!r} is not <start>/<end>")
        start, end = instant(start), instant(end)
        if end <= start:
            raise ScopeError(f"time scope: the range is reversed or empty: end {end} is not after start {start}")
        return {"kind": "time_range", "start": start, "end": end}
    if kind == "query":
        return parse_query(arg)
    raise ScopeError(f"unknown scope kind {kind!r}: use {SCOPE_USAGE}")


def parse_query(arg: str) -> dict[str, Any]:
    """`query:decision=DENY&tool=shell&since=<RFC 3339>&until=<RFC 3339>`: discovery's filters and window."""
    try:
        pairs = urllib.parse.parse_qsl(arg, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ScopeError(f"query scope: {arg[:80]!r} is not <filter>=<value>&...") from None
    names = [name for name, _ in pairs]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ScopeError(f"query scope: {repeated[0]!r} is given more than once")
    filters, window = {}, {}
    for name, value in pairs:
        if name in ("since", "until"):
            window["start" if name == "since" else "end"] = instant(value)
        elif name not in QUERY_FILTERS:
            raise ScopeError(f"query scope: unknown filter {name!r}: use {', '.join(QUERY_FILTERS)}, since, until")
        elif name in UUID_FILTERS:
            try:
                filters[name] = str(uuid.UUID(value))
            except ValueError:
                raise ScopeError(f"query scope: {name} {value!r} is not a UUID") from None
        elif not 1 <= len(value) <= 200 or any(c < " " for c in value):
            raise ScopeError(f"query scope: {name} {value[:80]!r} is not 1-200 characters without control characters")
        else:
            filters[name] = value
    if not (filters or window):
        raise ScopeError("query scope: give at least one filter or a since/until bound")
    if "start" in window and "end" in window and window["end"] <= window["start"]:
        raise ScopeError(f"query scope: the range is reversed or empty: until {window['end']} is not after since "
                         f"{window['start']}")
    return {"kind": "query", "query": {name: filters.get(name) for name in QUERY_FILTERS},
            "start": window.get("start"), "end": window.get("end")}


def describe(scope: dict[str, Any]) -> str:
    match scope["kind"]:
        case "run" | "approval":
            return f"{scope['kind']} {scope['id']}"
        case "actor":
            return f"actor {scope['subject']}"
        case "time_range":
            return f"time range [{scope['start']}, {scope['end']})"
        case "query":
            given = ", ".join(f"{k}={v}" for k, v in (scope.get("query") or {}).items() if v is not None)
            window = (f" recorded in [{scope.get('start') or '-'}, {scope.get('end') or '-'})"
                      if scope.get("start") or scope.get("end") else "")
            return f"query {given or 'of every event'}{window}"
    return "the tenant"


class Selector:
    """Whether each envelope, fed in chain order, belongs to the scope (a run's family: the run's events, its
    tool calls' and approvals' events, the costs charged to it)."""

    def __init__(self, scope: dict[str, Any]):
        self.scope, self.kind = scope, scope["kind"]
        self.members: set[str] = set()
        # A query scope: each tool call's and approval's (run_id, tool, chain_seq of its *.requested), and where
        # a filter needs them (run_id, tool), those *.requested envelopes; `context` the chain_seqs of the ones
        # a selected event matched through, which the bundle must hold beside the scope's events.
        query = (scope.get("query") or {}) if self.kind == "query" else {}
        self.filters = {k: v for k, v in query.items() if v is not None}
        self.keeps_parents = bool(self.filters.keys() & {"run_id", "tool"})
        self.parents: dict[str, list] = {}
        self.requested: dict[str, dict[str, Any]] = {}
        self.context: dict[int, int] = {}   # context chain_seq -> the first selected chain_seq that needs it

    def state(self) -> dict[str, Any]:
        return {"members": sorted(self.members), "parents": self.parents, "requested": self.requested,
                "context": [[k, v] for k, v in sorted(self.context.items())]}

    def restore(self, state: dict[str, Any]) -> None:
        self.members, self.parents = set(state["members"]), dict(state.get("parents", {}))
        self.requested = dict(state.get("requested", {}))
        self.context = {k: v for k, v in state.get("context", [])}

    def context_envelopes(self, up_to: int) -> list[dict[str, Any]]:
        """The *.requested envelopes selected events up to chain_seq `up_to` matched through, in chain order."""
        wanted = {seq for seq, by in self.context.items() if by <= up_to}
        return sorted((e for e in self.requested.values() if e["chain_seq"] in wanted), key=lambda e: e["chain_seq"])

    def matches(self, env: dict[str, Any]) -> bool:
        """Whether the event's audit row (projectors/audit.py `row`) equals every filter, and it is in the window."""
        p, kind, aid, seq = env["payload"], env["aggregate_type"], env["aggregate_id"], env["chain_seq"]
        if kind in PARENT_KINDS and env["type"].endswith(".requested"):
            run = p.get("run_id") if isinstance(p.get("run_id"), str) else None
            self.parents[aid] = [run, p.get("tool"), seq]
            if self.keeps_parents:
                self.requested[aid] = env
        start, end = self.scope.get("start"), self.scope.get("end")
        if (start and env["recorded_at"] < start) or (end and env["recorded_at"] >= end):
            return False
        parent_run, parent_tool, parent_seq = self.parents.get(aid, (None, None, None))
        run_id = aid if kind == "run" else p.get("run_id") or parent_run
        tool = p.get("tool") or parent_tool
        row = {"actor": env["actor"]["subject"], "type": env["type"], "aggregate_id": aid, "decision": p.get("decision"),
               "run_id": run_id, "tool": tool,
               "tool_call_id": aid if kind == "tool_call" else p.get("tool_call_id"),
               "approval_id": aid if kind == "approval" else p.get("approval_id")}
        if any(row[name] != value for name, value in self.filters.items()):
            return False
        through_parent = ("run_id" in self.filters and kind != "run" and not p.get("run_id")) or (
            "tool" in self.filters and not p.get("tool"))
        if through_parent and parent_seq is not None and parent_seq != seq:
            self.context.setdefault(parent_seq, seq)
        return True

    def wants(self, env: dict[str, Any]) -> bool:
        kind, scope = self.kind, self.scope
        if kind == "tenant":
            return True
        if kind == "query":
            return self.matches(env)
        if kind == "actor":
            return env["actor"]["subject"] == scope["subject"]
        if kind == "time_range":
            return scope["start"] <= env["recorded_at"] < scope["end"]
        if kind == "approval":
            return env["aggregate_type"] == "approval" and env["aggregate_id"] == scope["id"]
        if env["aggregate_type"] == "run":
            return env["aggregate_id"] == scope["id"]
        if env["aggregate_id"] in self.members:
            return True
        if env["payload"].get("run_id") != scope["id"]:
            return False
        if env["aggregate_type"] in ("tool_call", "approval") and env["type"].endswith(".requested"):
            self.members.add(env["aggregate_id"])
            return True
        return env["type"] == "budget.cost_recorded"


def sealed_kids(value: Any) -> Iterable[str]:
    """The data key ids of the sealed content fields in a payload."""
    if isinstance(value, dict):
        if value.keys() == SEALED_FIELDS:
            yield value["kid"]
        else:
            for item in value.values():
                yield from sealed_kids(item)
    elif isinstance(value, list):
        for item in value:
            yield from sealed_kids(item)


def run_of(env: dict[str, Any]) -> str | None:
    if env["aggregate_type"] == "run":
        return env["aggregate_id"]
    return env["payload"].get("run_id") if isinstance(env["payload"].get("run_id"), str) else None


@dataclass
class Summary:
    """What governance records are matched against: the runs, aggregates, subjects, span and data keys of
    the scope's events."""
    count: int = 0
    runs: set[str] = field(default_factory=set)
    aggregates: set[str] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)
    kids: set[str] = field(default_factory=set)
    first: str = "\uffff"
    last: str = ""

    def add(self, env: dict[str, Any]) -> None:
        self.count += 1
        self.aggregates.add(env["aggregate_id"])
        self.subjects.add(env["actor"]["subject"])
        if run := run_of(env):
            self.runs.add(run)
        self.first, self.last = min(self.first, env["recorded_at"]), max(self.last, env["recorded_at"])
        self.kids.update(sealed_kids(env["payload"]))


def touches(hold: dict[str, Any], s: Summary, whole_tenant: bool) -> bool:
    """Whether a hold's scope covers any event summarised (a run or aggregate hold covers the run's events)."""
    match hold.get("kind"):
        case "tenant":
            return s.count > 0
        case _ if whole_tenant:
            return True
        case "run":
            return hold["run_id"] in s.runs
        case "aggregate":
            return hold["aggregate_id"] in s.aggregates or hold["aggregate_id"] in s.runs
        case "subject":
            return hold["subject"] in s.subjects
        case "time_range":
            return s.first < instant(hold["end"]) and s.last >= instant(hold["start"])
    return False


def fold_governance(records: Iterable[dict[str, Any]], s: Summary, whole_tenant: bool
                    ) -> tuple[dict[str, Any], set[int]]:
    """governance.json from the tenant's governance events (chain order), and the chain_seqs it cites."""
    holds: dict[str, dict] = {}
    sweeps, shreds, cited = [], [], set()
    for env in records:
        p, seq, t = env["payload"], env["chain_seq"], env["type"]
        if t == "legal_hold.placed" and touches(p["scope"], s, whole_tenant):
            holds[env["aggregate_id"]] = {
                "hold_id": env["aggregate_id"], "matter": p["matter"], "scope": p["scope"], "state": "active",
                "placed_seq": seq, "placed_by": p["placed_by"], "placed_at": env["recorded_at"],
                "platform": p["platform"], "released_seq": None, "released_by": None, "released_at": None}
        elif t == "legal_hold.released" and env["aggregate_id"] in holds:
            holds[env["aggregate_id"]].update(state="released", released_seq=seq, released_by=p["released_by"],
                                              released_at=env["recorded_at"])
        elif t == "retention.swept":
            removed = [r for r in p["run_ids"] if whole_tenant or r in s.runs]
            if not removed:
                continue
            sweeps.append({"chain_seq": seq, "record_class": p["record_class"], "stores": p["stores"],
                           "cutoff": p["cutoff"], "days": p["days"], "policy_version": p["policy_version"],
                           "run_ids": removed})
        elif t == "retention.subject_shredded":
            in_bundle = sorted(s.kids.intersection(p["key_ids"]))
            if not (whole_tenant or in_bundle or p["subject"] in s.subjects):
                continue
            shreds.append({"chain_seq": seq, "subject": p["subject"], "key_ids": list(p["key_ids"]),
                           "in_bundle": in_bundle})
        else:
            continue
        cited.add(seq)
    destroyed = sorted({k for shred in shreds for k in shred["key_ids"]})
    return {"holds": list(holds.values()), "sweeps": sweeps, "shreds": shreds, "destroyed_key_ids": destroyed}, cited
