"""Appending a command's new events: each event sealed and folded into the tenant's indexes in one pass.

`TenantLedger.track` is the reference fold, the one replay uses. For a new event the ledger already holds
every piece `track` reads back out of the envelope (its type, aggregate, payload, time and subject), so
`append` folds it from those pieces instead: what each event type needs (`tracking`, worked out once per
type) is done inline, and a type any other index watches (timers, steps, tool-call windows, sweeps,
checkpoints, the members of a run's family) goes through `track` itself. An event class's name, schema
version and payload fields are looked up once per class (`plan`). Both are checked against the references
they stand for in tests/unit/test_decide_fast_paths.py.
"""
from hashlib import sha256
from operator import attrgetter
from typing import Any

from uuid_utils import uuid7

from domain.context import id_text
from domain.registry import AGGREGATE_TYPES, EVENT_TYPES, payload_fields, schema_version_of
from domain.retention import MEMBER_TYPES, Family
from schemas.envelope import Sealed, instant
from schemas.sealing import Stamp, seal_event

# Event types `track` does more for than a run's family and the Merkle tree: they take the reference fold.
FULLY_TRACKED = frozenset({"approval.requested", "approval.granted", "approval.denied", "approval.expired",
                           "run.step_started", "retention.swept", "tool_call.requested",
                           "tool_call.policy_decided", "checkpoint.signed"})
FULL, NO_FAMILY, RUN, COST = 0, 1, 2, 3  # how `append` folds an event type (`tracking`)


def tracking(event_type: str, aggregate_type: str) -> int:
    """What `TenantLedger.track` does for an event of this type beside the tree and the tenant's actors."""
    if event_type in FULLY_TRACKED or aggregate_type in MEMBER_TYPES:
        return FULL
    if aggregate_type == "run":
        return RUN  # the run's own family (`Families.run_of`: the aggregate id)
    if event_type == "budget.cost_recorded":
        return COST  # the family of the run it is charged to, if any; the cost id a member of it
    return NO_FAMILY


class Plan:
    """An event class's name on the chain, schema version, payload fields, and how it is folded."""

    __slots__ = ("event_type", "schema_version", "names", "values", "aggregate_type", "tracking")

    def __init__(self, event_class: type, aggregate_class: type):
        self.event_type = EVENT_TYPES[event_class]
        self.schema_version = schema_version_of(event_class)
        self.names = tuple(f.name for f in payload_fields(event_class))
        self.values = attrgetter(*self.names) if len(self.names) > 1 else None
        self.aggregate_type = AGGREGATE_TYPES[aggregate_class]
        self.tracking = tracking(self.event_type, self.aggregate_type)


_PLANS: dict[tuple[type, type], Plan] = {}


def plan(event_class: type, aggregate_class: type) -> Plan:
    key = (event_class, aggregate_class)
    found = _PLANS.get(key)
    if found is None:
        found = _PLANS[key] = Plan(event_class, aggregate_class)
    return found


def payload(event: Any, p: Plan) -> dict[str, Any]:
    """`registry.payload_of(event)`."""
    names = p.names
    if p.values is not None:
        return dict(zip(names, p.values(event)))
    return {names[0]: getattr(event, names[0])} if names else {}


def append(ledger: Any, event: Any, aggregate: Any, stamp: Stamp, at: str, subject: str) -> Sealed:
    """Seal one new event of `aggregate` onto the ledger's chain and fold it, as `TenantLedger.append` did.

    `at` and `subject` are the stamp's `recorded_at` and actor subject (what `track` reads from the envelope).
    """
    p = _PLANS.get((type(event), type(aggregate))) or plan(type(event), type(aggregate))
    chain = ledger.chain
    seq = chain.head_seq + 1
    names = p.names  # payload(event, p)
    data = dict(zip(names, p.values(event))) if p.values is not None else {names[0]: getattr(event, names[0])} \
        if names else {}
    aggregate_id = id_text(event.originator_id)
    env = seal_event(stamp, str(uuid7()), seq, chain.head_hash, p.event_type, p.schema_version, p.aggregate_type,
                     aggregate_id, event.originator_version, instant(event.timestamp), data)
    chain.head_seq, chain.head_hash = env["chain_seq"], env["hash"]  # ChainVerifier.accept
    fold(ledger, env, p.tracking, aggregate_id, data, at, subject)
    return env


def fold(ledger: Any, env: dict[str, Any], kind: int, aggregate_id: str, data: dict[str, Any], at: str,
         subject: str) -> None:
    """`ledger.track(env)`, for an event `tracking` gave `kind`, from the pieces `env` was sealed from."""
    if kind == FULL:
        ledger.track(env)
        return
    families = ledger.families
    families.actors.add(subject)
    run_id = aggregate_id if kind == RUN else data.get("run_id") if kind == COST else None
    if run_id is not None:
        family = families.runs.get(run_id)
        if family is None:
            family = families.runs[run_id] = Family(run_id, at, at)
        else:  # max and min, as `Families.track`
            if at > family.last_at:
                family.last_at = at
            if at < family.first_at:
                family.first_at = at
        family.subjects.add(subject)
        family.events += 1
        if kind == COST:
            family.members.add(data["cost_id"])
    ledger.tree.append(sha256(b"\x00" + bytes.fromhex(env["hash"])).digest())  # leaf_hash
