"""A tenant's ledger state: aggregates, chain head, idempotency records, timers and step owners.

All of it is a fold of `ledger.events` (and the replies on `ledger.replies`), so a processor
that takes over a partition rebuilds it by replay and nothing lives only in memory.
"""
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from pydantic import TypeAdapter, ValidationError
from pydantic_core import SchemaValidator
from uuid_utils import uuid7

from domain.commands import AnyCommand, ExpireApproval
from domain.calls import CallWindows
from domain.client_time import ClockBounds
from domain.content import KeyRing
from domain.context import Context, id_text
from domain.errors import DomainError, Forbidden, InvalidCommand
from domain.governance import retention_id, stores_content
from domain.handlers import HANDLERS
from domain.appending import append
from domain.policy_reply import POLICY_TYPES, policy_outcome
from domain.retention import Families, Rules
from domain.registry import (AGGREGATE_TYPES, EVENT_TYPES, payload_of, schema_version_of,
                             to_domain_event)
from schemas.chain import ChainVerifier
from schemas.merkle import leaf_hash
from schemas.merkle_trees import CompactTree
from schemas.envelope import Actor, instant, iso
from schemas.sealing import Stamp, accepted, accepted_reply, seal_event

COMMAND = TypeAdapter(AnyCommand)
# COMMAND.validate_python without pydantic's Python wrapper (every option at its default), once the adapter is built
_VALIDATE = (COMMAND.validator.validate_python if isinstance(COMMAND.validator, SchemaValidator)
             else COMMAND.validate_python)
SYSTEM_ACTOR = Actor(subject="runledger:timer", roles=["system"])


class ChainBroken(Exception):
    """The log does not continue the chain: state cannot be trusted past this point."""


class Inconsistent(Exception):
    """A handler changed state and then rejected: the in-memory state must be rebuilt."""


class Undecidable(Exception):
    """Deciding a command raised something that is not a domain rejection (a defect): state may be half-changed."""

    def __init__(self, command_id: str, error: Exception):
        super().__init__(f"command {command_id} could not be decided: {error!r}")
        self.command_id = command_id
        self.kind = type(error).__name__


@dataclass
class TenantLedger:
    tenant_id: str
    chain: ChainVerifier = None  # type: ignore[assignment]
    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    expiries: dict[str, str] = field(default_factory=dict)
    step_runs: dict[str, str] = field(default_factory=dict)
    families: Families = field(default_factory=Families)
    rules: Rules = field(default_factory=Rules)
    tree: CompactTree = field(default_factory=CompactTree)
    signer: Any = None  # domain.evidence.CheckpointSigner
    checkpoint_seq: int = 0  # chain_seq of the last checkpoint.signed
    calls: CallWindows = field(default_factory=CallWindows)  # what THROTTLE counts, folded from the log
    clock: ClockBounds = field(default_factory=ClockBounds)  # how far a client's occurred_at may be from `now`

    def __post_init__(self) -> None:
        self.chain = self.chain or ChainVerifier(self.tenant_id)

    # -- rebuilding from the log -------------------------------------------------------------
    def apply(self, env: dict[str, Any]) -> None:
        """Fold one recorded envelope into the state, verifying the chain as it goes."""
        problem = self.chain.problem_with(env)
        if problem:
            raise ChainBroken(f"tenant {self.tenant_id} chain_seq {self.chain.head_seq + 1}: {problem}")
        event = to_domain_event(env)
        self.aggregates[event.originator_id] = event.mutate(self.aggregates.get(event.originator_id))
        self.chain.accept(env)
        self.track(env)

    def remember(self, reply: dict[str, Any]) -> None:
        """Fold one recorded reply: the first outcome for an idempotency key wins."""
        if reply.get("idempotency_key") and not reply.get("replayed"):
            self.replies.setdefault(reply["idempotency_key"], reply)

    def track(self, env: dict[str, Any]) -> None:
        """Fold one envelope into the indexes kept beside the aggregates, replayed or just appended."""
        self.track_timers(env["type"], env["aggregate_id"], env["payload"])
        self.track_steps(env["type"], env["aggregate_id"], env["payload"])
        self.families.track(env)
        self.calls.track(env, self.aggregates)
        self.tree.append(leaf_hash(bytes.fromhex(env["hash"])))
        if env["type"] == "checkpoint.signed":
            self.checkpoint_seq = env["chain_seq"]

    def track_steps(self, event_type: str, run_id: str, payload: dict[str, Any]) -> None:
        """Remember which run owns each step id; in logs from before the rule, the first run does."""
        if event_type == "run.step_started":
            self.step_runs.setdefault(payload["step_id"], run_id)

    def track_timers(self, event_type: str, aggregate_id: str, payload: dict[str, Any]) -> None:
        if event_type == "approval.requested":
            self.expiries[aggregate_id] = payload["expires_at"]
        elif event_type in ("approval.granted", "approval.denied", "approval.expired"):
            self.expiries.pop(aggregate_id, None)

    @property
    def stores_content(self) -> bool:
        return stores_content(self.tenant_id, self.aggregates)

    def shredded_keys(self) -> list[str]:
        """Every data key id a ShredSubject of this tenant destroyed (a takeover makes sure they are gone)."""
        retention = self.aggregates.get(retention_id(self.tenant_id))
        return [k for ids in (retention.shredded.values() if retention else ()) for k in ids]

    @property
    def unsigned(self) -> int:
        """Events appended since the last checkpoint (not counting the checkpoint's own event)."""
        return self.chain.head_seq - self.checkpoint_seq

    def due_expiries(self, now: datetime) -> list[str]:
        now_iso = iso(now)
        return [a for a, at in self.expiries.items()
                if at <= now_iso and self.aggregates[UUID(a)].state == "pending"]

    # -- deciding ----------------------------------------------------------------------------
    def execute(self, command: dict[str, Any], now: datetime,
                ring: KeyRing | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Decide one command envelope: return its reply and the sealed envelopes to append.

        `ring` holds the data keys fetched for this batch (domain/content.py); without one, a tenant
        that stores content has its content commands refused rather than stored in clear.
        """
        key = command.get("idempotency_key")
        prior = self.replies.get(key) if key else None
        if prior is not None:
            return self.replay(prior, command), []
        try:
            aggregate_id, version, envelopes, stamp = self.decide(command, now, ring)
        except DomainError as error:
            envelopes = []
            reply = self.reply(command, "rejected", code=error.code, reason=error.reason)
        except Exception as error:  # Inconsistent included: after a rebuild it would happen again
            raise Undecidable(command["command_id"], error) from error
        else:
            outcome = (policy_outcome(envelopes) if len(envelopes) != 1 or envelopes[0]["type"] in POLICY_TYPES
                       else None)  # `bears_on_policy`, for one event
            if outcome:
                reply = accepted_reply(self.reply(command, "accepted", aggregate_id=id_text(aggregate_id),
                                                  aggregate_version=version, events=[summary(e) for e in envelopes],
                                                  **outcome), envelopes)
            else:
                reply = accepted(command["command_id"], self.tenant_id, key, command["request_digest"],
                                 id_text(aggregate_id), version, [summary(envelopes[0])] if len(envelopes) == 1
                                 else [summary(e) for e in envelopes], envelopes, stamp)
        if key:
            self.replies[key] = reply
        return reply, envelopes

    def refuse_undecidable(self, command: dict[str, Any], kind: str) -> dict[str, Any]:
        """Answer a command that could not be decided once and for all: rejected, nothing appended."""
        reply = self.reply(command, "rejected", code="undecidable",
                           reason=f"runledger could not decide this command ({kind}); it is rejected and "
                                  "nothing was appended. This is a defect of runledger: report it")
        if command.get("idempotency_key"):
            self.replies[command["idempotency_key"]] = reply
        return reply

    def decide(self, command: dict[str, Any], now: datetime,
               ring: KeyRing | None = None) -> tuple[UUID, int, list[dict[str, Any]], Stamp | None]:
        """The aggregate the command addressed, its version, the sealed envelopes, and their `Stamp` (None if none)."""
        if command.get("occurred_at") is not None:
            self.clock.check(command["occurred_at"], now)
        cmd = parse_command(command["body"])
        actor = actor_of(command["actor"])
        handler, roles = HANDLERS[type(cmd)]
        if roles and roles.isdisjoint(actor.roles):
            raise Forbidden(f"{cmd.type} needs one of the roles {sorted(roles)}", "missing_role")
        ctx = Context.of(self.tenant_id, self.aggregates, actor, now, command.get("expected_version"), self.step_runs,
                         self.families, self.rules, ring, self.tree, self.signer,
                         self.chain.head_seq - self.checkpoint_seq, self.calls)  # `unsigned` as the property
        try:
            aggregate_id = handler(cmd, ctx)
        except DomainError:
            if ctx.has_pending_events():
                raise Inconsistent(f"{cmd.type} changed state before it was rejected")
            raise
        pairs = ctx.collect_pairs()
        envelopes, stamp = [], None
        if pairs:
            recorded_at = iso(now)
            stamp = Stamp.of_command(self.tenant_id, command, actor.subject, actor.roles, recorded_at)
            envelopes = [append(self, event, aggregate, stamp, recorded_at, actor.subject) for event, aggregate in pairs]
        subject = self.aggregates.get(aggregate_id)
        return aggregate_id, subject.version if subject else 0, envelopes, stamp

    def append(self, event: Any, stamp: Stamp) -> dict[str, Any]:
        """Seal one new event onto the chain; stamp holds the fields shared by a command's events."""
        env = seal_event(stamp, str(uuid7()), self.chain.head_seq + 1, self.chain.head_hash, EVENT_TYPES[type(event)],
                         schema_version_of(type(event)), AGGREGATE_TYPES[type(self.aggregates[event.originator_id])],
                         id_text(event.originator_id), event.originator_version, instant(event.timestamp),
                         payload_of(event))
        self.chain.accept(env)
        self.track(env)
        return env

    def reply(self, command: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
        return {"command_id": command["command_id"], "tenant_id": self.tenant_id,
                "idempotency_key": command.get("idempotency_key"),
                "request_digest": command["request_digest"], "status": status,
                "replayed": False, **fields}

    def replay(self, prior: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
        if prior["request_digest"] != command["request_digest"]:
            error = InvalidCommand(f"Idempotency-Key {command['idempotency_key']!r} was already "
                                   f"used for a different request", "idempotency_key_reused")
            return {**self.reply(command, "rejected", code=error.code, reason=error.reason), "replayed": True}
        return {**prior, "command_id": command["command_id"], "replayed": True,
                "original_command_id": prior["command_id"]}


def stamp_of(command: dict[str, Any], actor: Actor, recorded_at: str) -> dict[str, Any]:
    """The fields every event of the command carries."""
    stamp = {"recorded_at": recorded_at, "actor": {"subject": actor.subject, "roles": list(actor.roles)},
             "command_id": command["command_id"],
             "causation_id": command.get("causation_id") or command["command_id"],
             "correlation_id": command.get("correlation_id") or command["command_id"],
             "traceparent": command.get("traceparent")}
    if command.get("idempotency_key"):  # on the chain only when given, so older events' hashes hold
        stamp["idempotency_key"] = command["idempotency_key"]
    if command.get("occurred_at") is not None:  # the client's time, as the intake wrote it, on every event
        stamp["occurred_at"] = command["occurred_at"]
    return stamp


def actor_of(given: dict[str, Any]) -> Actor:
    """The command's actor, validated once per distinct subject and roles (a tenant has a few)."""
    try:
        if len(given) == 2 and type(given["roles"]) is list:
            return _actor(given["subject"], tuple(given["roles"]))
    except (KeyError, TypeError):  # not a mapping, a key missing, or unhashable: not an actor
        pass
    return Actor(**given)  # refuses what is not an actor (extras, other types), as it always did


@lru_cache(maxsize=1024)
def _actor(subject: Any, roles: tuple[Any, ...]) -> Actor:
    return Actor(subject=subject, roles=list(roles))


def parse_command(body: dict[str, Any]):
    try:
        return _VALIDATE(body)
    except ValidationError as error:
        raise InvalidCommand(f"invalid command: {error.errors(include_url=False)}") from None


def summary(env: dict[str, Any]) -> dict[str, Any]:
    return {"chain_seq": env["chain_seq"], "hash": env["hash"], "type": env["type"], "event_id": env["event_id"],
            "aggregate_id": env["aggregate_id"], "aggregate_version": env["aggregate_version"]}


def expire_command(tenant_id: str, approval_id: str, now: datetime) -> dict[str, Any]:
    """A system command the processor's timer issues for an approval past its expiry."""
    command_id = str(uuid7())
    return {"command_id": command_id, "tenant_id": tenant_id,
            "idempotency_key": None, "request_digest": f"expire:{approval_id}",
            "actor": SYSTEM_ACTOR.model_dump(), "issued_at": iso(now),
            "body": ExpireApproval(approval_id=UUID(approval_id)).model_dump(mode="json")}
