"""Handlers of the governance commands: holds, retention policies and sweeps."""
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from uuid_utils.compat import uuid7

from domain import commands as c
from domain.context import Context
from domain.errors import InvalidCommand, InvalidState, NotFound
from domain.governance import LegalHold, Retention, retention_id
from domain.retention import DEFAULT_DAYS
from domain.retention import CLASSES
from domain.run import Run
from schemas.envelope import iso

SUPER_ADMIN = "super_admin"
HOLDERS = frozenset({"admin", SUPER_ADMIN})
SWEEPERS = frozenset({"admin", SUPER_ADMIN, "system"})


def check_target(tenant_id: str | None, ctx: Context) -> None:
    """A command naming a tenant was routed to that tenant's chain by intake; anything else is a defect."""
    if tenant_id is not None and tenant_id != ctx.tenant_id:
        raise InvalidCommand(f"the command names tenant {tenant_id!r} but was sent to {ctx.tenant_id!r}",
                             "wrong_tenant")


def scope_payload(scope: Any, ctx: Context) -> dict[str, Any]:
    """The scope as recorded: ids as strings, instants in the envelope's one time format."""
    recorded = scope.model_dump(mode="json")
    if scope.kind == "time_range":
        recorded.update(start=ctx.iso(scope.start), end=ctx.iso(scope.end))
    elif scope.kind == "run":
        ctx.get(Run, scope.run_id)
    elif scope.kind == "aggregate" and scope.aggregate_id not in ctx.aggregates:
        raise NotFound(f"no aggregate {scope.aggregate_id} in tenant {ctx.tenant_id}")
    return recorded


def place_legal_hold(cmd: c.PlaceLegalHold, ctx: Context) -> UUID:
    check_target(cmd.tenant_id, ctx)
    scope = scope_payload(cmd.scope, ctx)
    hold_id = ctx.new_id(cmd.hold_id)
    return ctx.add(LegalHold.place(hold_id, cmd.matter, cmd.reason, scope, ctx.actor.subject,
                                   platform=SUPER_ADMIN in ctx.actor.roles))


def release_legal_hold(cmd: c.ReleaseLegalHold, ctx: Context) -> UUID:
    check_target(cmd.tenant_id, ctx)
    hold = ctx.get(LegalHold, cmd.hold_id)
    hold.release(cmd.reason, ctx.actor.subject, SUPER_ADMIN in ctx.actor.roles)
    return hold.id


def open_retention(ctx: Context) -> Retention:
    retention = ctx.find(Retention, retention_id(ctx.tenant_id))
    if retention is None:
        retention = Retention.open(ctx.tenant_id)
        ctx.add(retention)
    return retention


def set_retention_policy(cmd: c.SetRetentionPolicy, ctx: Context) -> UUID:
    if problem := ctx.rules.check(cmd.record_class, cmd.days):
        raise InvalidCommand(problem, "retention_below_minimum")
    retention = open_retention(ctx)
    retention.set_days(cmd.record_class, cmd.days)
    return retention.id


def active_holds(ctx: Context) -> list[LegalHold]:
    return [a for a in ctx.aggregates.values() if isinstance(a, LegalHold) and a.active]


def sweep_retention(cmd: c.SweepRetention, ctx: Context) -> UUID:
    check_target(cmd.tenant_id, ctx)
    existing = ctx.find(Retention, retention_id(ctx.tenant_id))
    days = existing.days[cmd.record_class] if existing else DEFAULT_DAYS[cmd.record_class]
    cutoff = ctx.iso(ctx.now - timedelta(days=days))
    ended = [str(i) for i, a in ctx.aggregates.items() if isinstance(a, Run) and a.is_terminal]
    holds = active_holds(ctx)
    gone, kept = [], Counter()
    for family in ctx.families.expired(cmd.record_class, cutoff, ended):
        covering = [h for h in holds if h.covers(family)]
        kept.update(str(h.id) for h in covering)
        if not covering and len(gone) < cmd.limit:
            gone.append(family)
    if not gone:
        held = f"; {sum(kept.values())} expired runs are kept by holds {sorted(kept)}" if kept else ""
        raise InvalidState(f"nothing to sweep: no un-held {cmd.record_class} records of tenant "
                           f"{ctx.tenant_id} ended before {cutoff}{held}", "nothing_to_sweep")
    retention = open_retention(ctx)  # only now: a rejected command must leave no pending event
    retention.sweep(cmd.record_class, cutoff, gone, dict(kept))
    return retention.id


def set_content_policy(cmd: c.SetContentPolicy, ctx: Context) -> UUID:
    if cmd.store_content and not ctx.rules.content_keys:
        raise InvalidState("this deployment cannot store content: its processors have no key-encryption key "
                           "(RUNLEDGER_KEK); content stays metadata-only", "content_storage_not_configured")
    retention = open_retention(ctx)
    retention.set_content_policy(cmd.store_content)
    return retention.id


def holds_on_subject(subject: str, ctx: Context) -> list[LegalHold]:
    """Active holds that keep anything the subject wrote: on the tenant, the subject, or a run they acted in."""
    families = [f for f in ctx.families.runs.values() if subject in f.subjects]
    return [h for h in active_holds(ctx)
            if h.scope["kind"] == "tenant" or h.scope.get("subject") == subject or any(h.covers(f) for f in families)]


def shred_subject(cmd: c.ShredSubject, ctx: Context) -> UUID:
    check_target(cmd.tenant_id, ctx)
    if holding := holds_on_subject(cmd.subject, ctx):
        raise InvalidState(f"{cmd.subject!r} cannot be shredded while legal holds keep what they wrote: "
                           f"{', '.join(h.label() for h in holding)}; nothing was destroyed", "shred_under_hold")
    key_ids = sorted(ctx.sealer.shreddable.get(cmd.subject, [])) if ctx.sealer is not None else []
    if cmd.subject not in ctx.families.actors and not key_ids:
        raise NotFound(f"no subject {cmd.subject!r} has acted in tenant {ctx.tenant_id}")
    retention = open_retention(ctx)
    retention.shred(cmd.subject, key_ids, cmd.reason)
    if ctx.sealer is not None:
        ctx.sealer.revoke(cmd.subject)
    return retention.id


def sweep_commands(tenant_id: str, now: datetime) -> list[dict[str, Any]]:
    """The system commands a processor's retention timer issues for one tenant: one per record class."""
    commands = []
    for record_class in CLASSES:
        command_id = str(uuid7())
        commands.append({"command_id": command_id, "tenant_id": tenant_id, "idempotency_key": None,
                         "request_digest": f"sweep:{record_class}", "issued_at": iso(now),
                         "actor": {"subject": "runledger:retention", "roles": ["system"]},
                         "body": c.SweepRetention(record_class=record_class).model_dump(mode="json")})
    return commands


GOVERNANCE_HANDLERS = {
    c.PlaceLegalHold: (place_legal_hold, HOLDERS),
    c.ReleaseLegalHold: (release_legal_hold, HOLDERS),
    c.SetRetentionPolicy: (set_retention_policy, frozenset({"admin"})),
    c.SweepRetention: (sweep_retention, SWEEPERS),
    c.SetContentPolicy: (set_content_policy, frozenset({"admin"})),
    c.ShredSubject: (shred_subject, HOLDERS),
}
