"""Commands of the evidence side: checkpoints, export jobs and read-model verifications (parts of AnyCommand)."""
from typing import Literal

from pydantic import Field

from domain.fields import Command, Count, Digest, Id, Name, Text
from domain.scopes import ExportScope


class SignCheckpoint(Command):
    """Sign the tenant's tree head as it stands (issued by the processor's checkpoint timer)."""
    type: Literal["SignCheckpoint"] = "SignCheckpoint"


class RequestExport(Command):
    """Open an export job on the chain: this scope, cut at this checkpoint size (`runledger export` sends it)."""
    type: Literal["RequestExport"] = "RequestExport"
    job_id: Id | None = None
    scope: ExportScope
    checkpoint_size: Count


class FailExport(Command):
    """End an export job that did not produce a bundle, saying why."""
    type: Literal["FailExport"] = "FailExport"
    job_id: Id
    code: Name  # what failed, in a word the chain keeps in clear (e.g. write_failed); the reason is content
    reason: Text


class RecordExport(Command):
    """Record on the chain that an evidence bundle was exported (scope, size, digest), completing its job if named."""
    type: Literal["RecordExport"] = "RecordExport"
    export_id: Id | None = None
    job_id: Id | None = None
    scope: ExportScope
    events: Count
    checkpoint_size: Count
    bundle_sha256: Digest


class VerifiedModel(Command):
    """What a verification found in one read model of the tenant (counts of rows, never their content)."""
    rows: Count
    missing: Count
    extra: Count
    mismatched: Count
    applied: Count
    stopped_at: Count | None = None
    ok: bool


class VerificationProblem(Command):
    """One row a verification found wrong: its model, table and key, what is wrong, which columns differ."""
    model: Name
    table: Name
    key: dict[Name, Name | Count] = Field(max_length=8)
    kind: Literal["missing", "extra", "mismatched", "held", "skipped", "schema"]
    columns: list[Name] = Field(default_factory=list, max_length=64)
    detail: Text | None = None


class RecordVerification(Command):
    """Record on the chain what `runledger verify-readmodels` found: the chain size it checked, each model's verdict."""
    type: Literal["RecordVerification"] = "RecordVerification"
    verification_id: Id | None = None
    chain_size: Count
    models: dict[Name, VerifiedModel] = Field(min_length=1, max_length=32)
    problems: list[VerificationProblem] = Field(default_factory=list, max_length=20)
