"""The rules of health: what each part of a role is, from its own state and what it depends on (pure).

A part is one thing a role does: the API accepting commands, reading each store, delivering live
streams; the processor deciding its partitions; each projector applying the log. A part whose own
state is fine is still down while a dependency it needs is down, so a projector idle over a dead
PostgreSQL is not reported ok. A role folds its parts: ok when all are, down (or starting) when
none works, degraded in between; the process folds its roles the same way.

`reason` may quote an error, a server's message or an event, so it is shown to ops only; status,
since and the sentences of `works`/`fails` (fixed texts naming parts and dependencies) are public.
"""
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from infra.adapters.probes import Observation

NOT_WORKING = frozenset({"down", "failed", "retrying", "starting"})
DEPENDENCY_NAMES = {"broker": "the broker", "postgres": "PostgreSQL", "clickhouse": "ClickHouse"}


@dataclass(frozen=True)
class Part:
    status: str  # ok | degraded | retrying | failed | down | starting
    since: datetime | None = None  # None: since when is for the caller's record of changes to say
    reason: str | None = None
    cause: str | None = None  # timeout | error | dependency | state
    facts: dict[str, Any] = field(default_factory=dict)  # for ops
    public: dict[str, Any] = field(default_factory=dict)  # for everyone (partition numbers, counts)
    needs: str | None = None  # the dependency it is down for


def fold(statuses: list[str]) -> str:
    found = set(statuses)
    if found <= {"ok"}:
        return "ok"
    if found <= {"starting"}:
        return "starting"
    return "down" if found <= NOT_WORKING else "degraded"


def dependency(observed: Observation) -> Part:
    cause = None if observed.status == "ok" else "timeout" if observed.timed_out else "error"
    return Part(observed.status, observed.since, observed.reason, cause,
                {"timeout_s": observed.timeout_s, "checked_at": observed.checked_at.isoformat()})


def needing(part: Part, dependencies: dict[str, Part], *names: str) -> Part:
    """The part, or down for the first of the dependencies it needs that is down (unless it is already stuck).

    A part still starting is down for such a dependency too: it is waiting for it (infra/adapters/backoff.py)."""
    if part.status in ("failed", "retrying"):
        return part
    for name in names:
        needed = dependencies.get(name)
        if needed is not None and needed.status != "ok":
            return replace(part, status="down", since=needed.since, cause="dependency", needs=name,
                           reason=f"{DEPENDENCY_NAMES[name]} is down: {needed.reason}")
    return part


def capability(name: str, dependencies: dict[str, Part]) -> Part:
    """An API part that works exactly when its store does."""
    return needing(Part("ok"), dependencies, name)


def hub_part(hub) -> Part:
    """The SSE hub's LISTEN connection: up, lost (since, why), or not yet connected."""
    if hub.ready.is_set():
        return Part("ok", hub.listening_since)
    if hub.lost_since is not None:
        return Part("down", hub.lost_since, hub.lost_because, "error")
    return Part("starting", reason="the LISTEN connection has not been opened yet")


def processor_part(processor) -> Part:
    """The processor's partitions: owned (deciding), being acquired, or stopped at a broken chain."""
    assigned = processor.assigned
    if assigned is None:
        return Part("starting", reason="it has not joined its consumer group yet")
    owned, broken = sorted(processor.owners), dict(processor.broken)
    acquiring = sorted(assigned - set(owned) - set(broken))
    public = {"owned": owned, "assigned": sorted(assigned), "broken": sorted(broken), "acquiring": acquiring}
    facts = {"broken_because": {str(p): why for p, why in sorted(broken.items())}}
    if broken:
        return Part("degraded" if owned else "down", None, f"partitions {sorted(broken)} are stopped: their chain "
                    "is broken (see broken_because)", "state", facts, public)
    if acquiring:
        return Part("degraded" if owned else "starting", None, f"acquiring partitions {acquiring}: fencing their "
                    "previous owner and rebuilding their state", "state", facts, public)
    why = None if owned else "the group assigned it no partition (a standby, or still joining)"
    return Part("ok", None, why, None, facts, public)


def projector_part(runner) -> Part:
    """One projector: failed at an event, retrying after errors, holding tenants, or applying the log."""
    if runner is None:
        return Part("starting", reason="its runner has not started yet")
    held = runner.admission.held
    public = {"held_tenants": len(held)}
    if runner.failed:
        return Part("failed", runner.failed_since, runner.failed, "state", public=public)
    if runner.last_error:
        return Part("retrying", runner.erring_since, runner.last_error, "error", public=public)
    if held:
        return Part("degraded", None, f"tenants held at an event it cannot apply: {len(held)} "
                    "(GET /v1/ops/projectors says which and why)", "state", public=public)
    return Part("ok", public=public)


CAPABILITIES = {
    "commands": ("commands are accepted", "commands cannot be accepted"),
    "postgres_reads": ("reads of the PostgreSQL read models work (runs, approvals, governance, evidence, "
                       "stream replay)", "reads of the PostgreSQL read models fail"),
    "clickhouse_reads": ("audit, discovery and cost reads work", "audit, discovery and cost reads fail"),
    "live_streams": ("live SSE tails are delivered", "live SSE tails are not delivered"),
}


def sentence(role: str, name: str, part: Part) -> tuple[bool, str]:
    """Whether the part works, and what that means, in words that quote nothing but names."""
    if role == "api":
        works, fails = CAPABILITIES[name]
    elif role == "processor":
        owned = part.public.get("owned", [])
        works, fails = f"this processor decides the commands of partitions {owned}", "this processor decides no commands"
    else:
        works, fails = f"the {name} read model follows the log", f"the {name} read model does not advance"
    if part.status == "ok":
        return True, works
    if part.status == "degraded":
        return True, f"{works}, in part ({because(part)})"
    return False, f"{fails}: {because(part)}"


def because(part: Part) -> str:
    if part.needs:
        return f"{DEPENDENCY_NAMES[part.needs]} is down"
    if part.status == "degraded" and "held_tenants" in part.public:
        return f"tenants held: {part.public['held_tenants']}"
    if part.status == "degraded":
        return f"partitions {part.public.get('broken', [])} are stopped, {part.public.get('acquiring', [])} being acquired"
    if part.status == "down":
        return "its partitions are stopped at a broken chain" if "broken" in part.public else \
            "its connection is lost, and is being opened again"
    return {"failed": "it stopped at an event it cannot apply", "retrying": "its work fails and is retried",
            "starting": "it is starting"}.get(part.status, part.status)
