"""Signed checkpoints of each tenant's chain: RFC 9162 tree heads in C2SP format, recorded on the chain.

The tree's leaves are the tenant's events in chain order (leaf = SHA-256(0x00 ‖ event hash)). The
ledger keeps a compact tree of them as a fold of the log (O(log n) hashes), and a system command
the processor issues every N events or T seconds records `checkpoint.signed`: the origin
`runledger/<deployment>/<tenant>`, the size, the root, the signed note and the verification key.
A checkpoint is itself a leaf of every later tree, so each later export proves it extends it.
"""
import base64
from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

from uuid_utils.compat import uuid7

from eventsourcing.domain import Aggregate

from domain import commands as c
from domain.context import Context
from domain.content import Content
from domain.errors import InvalidCommand, InvalidState
from domain.events import create, event
from schemas.notes import Checkpoint, Signer, tenant_origin


@lru_cache(maxsize=4096)
def checkpoints_id(tenant_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"runledger:checkpoints:{tenant_id}")


class CheckpointSigner:
    """The deployment's Ed25519 key, named per tenant as that tenant's origin (C2SP: key name = origin)."""

    def __init__(self, deployment: str, seed: bytes):
        self.deployment = deployment
        self._signer = lru_cache(maxsize=4096)(lambda tenant: Signer(tenant_origin(deployment, tenant), seed))

    def __repr__(self) -> str:
        return f"CheckpointSigner(deployment={self.deployment!r}, key=<hidden>)"

    def origin(self, tenant_id: str) -> str:
        return tenant_origin(self.deployment, tenant_id)

    def sign(self, tenant_id: str, size: int, root: bytes) -> tuple[str, str, str]:
        """(origin, signed note text, vkey) of the checkpoint of this tree."""
        signer = self._signer(tenant_id)
        note = Checkpoint(signer.name, size, root).sign([signer]).decode()
        return signer.name, note, signer.vkey


class TreeHeads(Aggregate):
    """A tenant's signed checkpoints, newest last."""

    class Opened(Aggregate.Created):
        origin: str

    class Signed(Aggregate.Event):
        origin: str
        size: int
        root: str
        note: str
        key: str

    @classmethod
    def open(cls, tenant_id: str, origin: str) -> "TreeHeads":
        return create(cls, cls.Opened, id=checkpoints_id(tenant_id), origin=origin)

    @event(Opened)
    def __init__(self, origin: str):
        self.origin = origin
        self.size = 0

    def sign(self, origin: str, size: int, root: bytes, note: str, key: str) -> None:
        self._signed(origin, size, base64.b64encode(root).decode(), note, key)

    @event(Signed)
    def _signed(self, origin: str, size: int, root: str, note: str, key: str) -> None:
        self.size = size


def sign_checkpoint(cmd: c.SignCheckpoint, ctx: Context) -> UUID:
    if ctx.signer is None:
        raise InvalidState("this processor has no signing key (RUNLEDGER_SIGNING_KEY)", "no_signing_key")
    heads = ctx.find(TreeHeads, checkpoints_id(ctx.tenant_id))
    size = ctx.tree.size
    if not ctx.unsigned:
        raise InvalidState(f"nothing to sign: no event since the checkpoint of size {heads.size if heads else 0}",
                           "nothing_to_sign")
    root = ctx.tree.root()
    origin, note, key = ctx.signer.sign(ctx.tenant_id, size, root)
    if heads is None:
        heads = TreeHeads.open(ctx.tenant_id, origin)
        ctx.add(heads)
    heads.sign(origin, size, root, note, key)
    return heads.id


def checkpoint_command(tenant_id: str, now_iso: str) -> dict:
    """The system command a processor's checkpoint timer issues for a tenant with unsigned events."""
    return {"command_id": str(uuid7()), "tenant_id": tenant_id, "idempotency_key": None,
            "request_digest": "checkpoint", "issued_at": now_iso,
            "actor": {"subject": "runledger:checkpoints", "roles": ["system"]},
            "body": c.SignCheckpoint().model_dump(mode="json")}


class Export(Aggregate):
    """An evidence bundle an auditor took out: its scope, what it holds, and its digest."""

    class Recorded(Aggregate.Created):
        scope: dict
        events: int
        checkpoint_size: int
        bundle_sha256: str
        exported_by: str

    @classmethod
    def record(cls, export_id: str, scope: dict, events: int, checkpoint_size: int, bundle_sha256: str,
               exported_by: str) -> "Export":
        return create(cls, cls.Recorded, id=UUID(export_id), scope=scope, events=events,
                           checkpoint_size=checkpoint_size, bundle_sha256=bundle_sha256, exported_by=exported_by)

    @event(Recorded)
    def __init__(self, scope: dict, events: int, checkpoint_size: int, bundle_sha256: str, exported_by: str):
        self.scope, self.events, self.bundle_sha256 = scope, events, bundle_sha256


class ExportJob(Aggregate):
    """An export as a job on the chain: who asked for which scope, cut at which checkpoint, and how it ended.

    `runledger export` requests the job once it has read the chain and knows the scope has events to export
    (bad input changes nothing), writes the bundle, then completes it with the bundle's digest in the same
    command that records the Export, or fails it with the reason. A job left `requested` is an export that
    never finished: the chain shows it was attempted.
    """

    class Requested(Aggregate.Created):
        scope: dict
        checkpoint_size: int
        requested_by: str

    class Completed(Aggregate.Event):
        export_id: str
        bundle_sha256: str

    class Failed(Aggregate.Event):
        code: str
        reason: Content

    @classmethod
    def request(cls, job_id: str, scope: dict, checkpoint_size: int, requested_by: str) -> "ExportJob":
        return create(cls, cls.Requested, id=UUID(job_id), scope=scope, checkpoint_size=checkpoint_size,
                           requested_by=requested_by)

    @event(Requested)
    def __init__(self, scope: dict, checkpoint_size: int, requested_by: str):
        self.scope, self.checkpoint_size, self.requested_by = scope, checkpoint_size, requested_by
        self.state = "requested"

    def check_open(self, action: str) -> None:
        if self.state != "requested":
            raise InvalidState(f"cannot {action} export job {self.id}: it is {self.state}", "export_job_closed")

    def complete(self, export_id: str, scope: dict, checkpoint_size: int, bundle_sha256: str) -> None:
        self.check_open("complete")
        if (scope, checkpoint_size) != (self.scope, self.checkpoint_size):
            raise InvalidCommand(f"export job {self.id} was requested for scope {self.scope} at checkpoint size "
                                 f"{self.checkpoint_size}, not scope {scope} at size {checkpoint_size}",
                                 "export_job_mismatch")
        self._completed(export_id=export_id, bundle_sha256=bundle_sha256)

    @event(Completed)
    def _completed(self, export_id: str, bundle_sha256: str) -> None:
        self.state = "completed"

    def fail(self, code: str, reason) -> None:
        self.check_open("fail")
        self._failed(code=code, reason=reason)

    @event(Failed)
    def _failed(self, code: str, reason) -> None:
        self.state = "failed"


def record_export(cmd: c.RecordExport, ctx: Context) -> UUID:
    export_id = ctx.new_id(cmd.export_id)
    scope = cmd.scope.model_dump(mode="json")
    if cmd.job_id is not None:
        ctx.get(ExportJob, cmd.job_id).complete(export_id, scope, cmd.checkpoint_size, cmd.bundle_sha256)
    return ctx.add(Export.record(export_id, scope, cmd.events, cmd.checkpoint_size, cmd.bundle_sha256,
                                 ctx.actor.subject))


def request_export(cmd: c.RequestExport, ctx: Context) -> UUID:
    job_id = ctx.new_id(cmd.job_id)
    return ctx.add(ExportJob.request(job_id, cmd.scope.model_dump(mode="json"), cmd.checkpoint_size,
                                     ctx.actor.subject))


def fail_export(cmd: c.FailExport, ctx: Context) -> UUID:
    reason = ctx.content(cmd.reason)
    ctx.get(ExportJob, cmd.job_id).fail(cmd.code, reason)
    return cmd.job_id


class Verification(Aggregate):
    """What a verification of the tenant's read models against its chain found (`runledger verify-readmodels`)."""

    class Recorded(Aggregate.Created):
        chain_size: int
        models: dict
        problems: list
        ok: bool
        verified_by: str

    @classmethod
    def record(cls, verification_id: str, chain_size: int, models: dict, problems: list,
               verified_by: str) -> "Verification":
        ok = all(m["ok"] for m in models.values())
        return create(cls, cls.Recorded, id=UUID(verification_id), chain_size=chain_size, models=models,
                           problems=problems, ok=ok, verified_by=verified_by)

    @event(Recorded)
    def __init__(self, chain_size: int, models: dict, problems: list, ok: bool, verified_by: str):
        self.chain_size, self.ok = chain_size, ok


def check_verdicts(chain_size: int, events: int, models: dict, problems: list) -> None:
    """A verdict must describe this chain and agree with itself: ok only where nothing is wrong, problems of its models."""
    def refuse(why: str) -> None:
        raise InvalidCommand(why, "inconsistent_verification")
    if chain_size > events:
        refuse(f"chain_size {chain_size} is beyond the tenant's chain, which has {events} events")
    for name, m in models.items():
        wrong = m["missing"] or m["extra"] or m["mismatched"] or m["stopped_at"] is not None
        if m["ok"] and (wrong or any(p["model"] == name for p in problems)):
            refuse(f"models.{name} says ok, but counts or problems say otherwise")
    if unknown := sorted({p["model"] for p in problems} - set(models)):
        refuse(f"problems name models without a verdict: {', '.join(unknown)}")


def record_verification(cmd: c.RecordVerification, ctx: Context) -> UUID:
    models = {name: m.model_dump(mode="json") for name, m in cmd.models.items()}
    problems = [p.model_dump(mode="json") for p in cmd.problems]
    check_verdicts(cmd.chain_size, ctx.tree.size, models, problems)
    verification_id = ctx.new_id(cmd.verification_id)
    return ctx.add(Verification.record(verification_id, cmd.chain_size, models, problems, ctx.actor.subject))
