"""What retention removes, and what a hold keeps: runs and everything that belongs to them.

The unit of retention is a run's family: the run, its tool calls and approvals, and the cost
entries charged to it, with every subject that acted in it and the span of time it was recorded
in. Governance records (holds, retention policies, sweeps, budgets and their unattributed costs)
are never swept. The index is a fold of the log, kept beside the aggregates (invariant 6).
"""
from dataclasses import dataclass, field
from typing import Any, Iterable

CLASSES = ("audit", "operational")
# The read models each record class governs; a sweep of a class removes from all of them.
STORES = {"audit": ("audit", "cost", "archive"), "operational": ("runs", "approvals", "channels")}
DEFAULT_DAYS = {"audit": 3 * 365, "operational": 90}
MINIMUM_DAYS = {"audit": 3 * 365, "operational": 1}
MEMBER_TYPES = ("tool_call", "approval")


@dataclass(frozen=True)
class Rules:
    """The deployment's floor under every tenant's retention policy (settings, not tenant input)."""

    minimum_days: dict[str, int] = field(default_factory=lambda: dict(MINIMUM_DAYS))
    content_keys: bool = False  # whether this deployment can seal content (a KEK is configured)

    def check(self, record_class: str, days: int) -> str | None:
        floor = self.minimum_days[record_class]
        if days < floor:
            return (f"{record_class} records must be kept at least {floor} days in this deployment; "
                    f"{days} is below that minimum")
        return None


@dataclass
class Family:
    run_id: str
    first_at: str
    last_at: str
    members: set[str] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)
    events: int = 0
    swept: dict[str, int] = field(default_factory=dict)  # record class → chain_seq of the sweep

    def covers_time(self, start: str, end: str) -> bool:
        return self.first_at < end and self.last_at >= start


def scope_covers(scope: dict[str, Any], family: Family) -> bool:
    """Whether a hold of this scope keeps any record of the family."""
    match scope["kind"]:
        case "tenant":
            return True
        case "run":
            return scope["run_id"] == family.run_id
        case "aggregate":
            return scope["aggregate_id"] == family.run_id or scope["aggregate_id"] in family.members
        case "subject":
            return scope["subject"] in family.subjects
        case "time_range":
            return family.covers_time(scope["start"], scope["end"])
    raise ValueError(f"unknown hold scope {scope['kind']!r}")


@dataclass
class Families:
    """Run families of one tenant, by run id, and the run each member aggregate belongs to."""

    runs: dict[str, Family] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    actors: set[str] = field(default_factory=set)  # every subject that acted in the tenant
    nothing_swept = False  # not a field: True once known that no family was swept (the class's False: not known)

    def __post_init__(self) -> None:
        self.nothing_swept = not any(family.swept for family in self.runs.values())

    def run_of(self, env: dict[str, Any]) -> str | None:
        kind, aggregate_id, payload = env["aggregate_type"], env["aggregate_id"], env["payload"]
        if kind == "run":
            return aggregate_id
        if kind in MEMBER_TYPES:
            return self.owner.get(aggregate_id) or payload.get("run_id")
        if env["type"] == "budget.cost_recorded":
            return payload.get("run_id")
        return None

    def track(self, env: dict[str, Any]) -> None:
        self.actors.add(env["actor"]["subject"])
        if env["type"] == "retention.swept":
            self.nothing_swept = False
            for run_id in env["payload"]["run_ids"]:
                self.runs[run_id].swept[env["payload"]["record_class"]] = env["chain_seq"]
            return
        run_id = self.run_of(env)
        if run_id is None:
            return
        at = env["recorded_at"]
        family = self.runs.get(run_id)
        if family is None:
            family = self.runs[run_id] = Family(run_id, at, at)
        family.last_at = max(family.last_at, at)
        family.first_at = min(family.first_at, at)
        family.subjects.add(env["actor"]["subject"])
        family.events += 1
        if env["aggregate_type"] in MEMBER_TYPES:
            family.members.add(env["aggregate_id"])
            self.owner.setdefault(env["aggregate_id"], run_id)
        elif env["type"] == "budget.cost_recorded":
            family.members.add(env["payload"]["cost_id"])

    def swept_family_of(self, aggregate_id: str) -> Family | None:
        """The family an aggregate belongs to, if a sweep has removed it from any read model."""
        if self.nothing_swept:
            return None
        family = self.runs.get(self.owner.get(aggregate_id, aggregate_id))
        return family if family is not None and family.swept else None

    def expired(self, record_class: str, cutoff: str, ended: Iterable[str]) -> list[Family]:
        """Families of ended runs last recorded before cutoff and not yet swept for the class."""
        found = []
        for run_id in ended:
            family = self.runs.get(run_id)
            if family is not None and family.last_at < cutoff and record_class not in family.swept:
                found.append(family)
        return sorted(found, key=lambda f: (f.last_at, f.run_id))
