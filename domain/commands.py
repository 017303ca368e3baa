"""Commands: what clients ask runledger to do. Imperative names, frozen, strictly validated."""
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field

from domain.fields import (Command, Count, Currency, Digest, Id, Instant, Micros,
                           Name, RecordClass, RiskTier, TenantName, Text, json_integer)
from domain.policy_source import PolicyText
from domain.commands_evidence import FailExport, RecordExport, RecordVerification, RequestExport, SignCheckpoint
from domain.scopes import HoldScope


# Seconds a run may take from its request before, not yet ended, it counts as stuck (at most a year).
DeadlineSeconds = Annotated[int, Field(ge=1, le=366 * 86400)]


class RequestRun(Command):
    type: Literal["RequestRun"] = "RequestRun"
    run_id: Id | None = None
    agent_id: Name
    project: Name = "default"
    budget_micros: Micros | None = None
    labels: dict[Name, Name] = Field(default_factory=dict, max_length=32)
    deadline_s: DeadlineSeconds | None = None  # none: the tenant's default (SetRunDeadline), if it set one


class SetRunDeadline(Command):
    """The deadline every later run of the tenant gets when its RequestRun names none (null: no default)."""
    type: Literal["SetRunDeadline"] = "SetRunDeadline"
    deadline_s: DeadlineSeconds | None


class StartRun(Command):
    type: Literal["StartRun"] = "StartRun"
    run_id: Id


class StartStep(Command):
    type: Literal["StartStep"] = "StartStep"
    run_id: Id
    step_id: Id | None = None
    kind: Literal["llm", "tool", "approval"]
    name: Name


class FinishStep(Command):
    type: Literal["FinishStep"] = "FinishStep"
    run_id: Id
    step_id: Id
    outcome: Literal["succeeded", "failed"]
    error: Text | None = None


class CompleteRun(Command):
    type: Literal["CompleteRun"] = "CompleteRun"
    run_id: Id


class FailRun(Command):
    type: Literal["FailRun"] = "FailRun"
    run_id: Id
    error: Text


class RetryRun(Command):
    type: Literal["RetryRun"] = "RetryRun"
    run_id: Id


class CancelRun(Command):
    type: Literal["CancelRun"] = "CancelRun"
    run_id: Id
    reason: Text


class ResumeRun(Command):
    type: Literal["ResumeRun"] = "ResumeRun"
    run_id: Id
    reason: Text


class ForceFailRun(Command):
    type: Literal["ForceFailRun"] = "ForceFailRun"
    run_id: Id
    reason: Text


class RequestToolCall(Command):
    type: Literal["RequestToolCall"] = "RequestToolCall"
    tool_call_id: Id | None = None
    run_id: Id
    tool: Name
    risk_tier: RiskTier
    params_digest: Digest
    step_id: Id | None = None
    access: Literal["read", "write"] | None = None  # evaluated as write when not given
    operation: Name | None = None
    environment: Name | None = None


class DecidePolicy(Command):
    """An external engine's decision of a call its envelope handed out (EXTERNAL): never the requester's own."""
    type: Literal["DecidePolicy"] = "DecidePolicy"
    tool_call_id: Id
    decision: Literal["ALLOW", "DENY", "REQUIRE_APPROVAL"]
    policy_id: Name
    policy_version: Name
    bundle_revision: Name
    evaluated_at: Instant
    reason: Text
    required_approvals: Annotated[Literal[1, 2], BeforeValidator(json_integer)] | None = None
    required_role: Name | None = None


class PublishPolicy(Command):
    """Publish a policy envelope (Cedar policies and schema, SemVer version); `digest`, if given, must match."""
    type: Literal["PublishPolicy"] = "PublishPolicy"
    policy_id: Name
    version: Name
    policies: PolicyText
    cedar_schema: PolicyText
    digest: Digest | None = None


class ActivatePolicy(Command):
    """Make a published version the one that decides calls in the tenant, or in a project and/or environment."""
    type: Literal["ActivatePolicy"] = "ActivatePolicy"
    policy_id: Name
    version: Name
    project: Name | None = None
    environment: Name | None = None


class RecordStepUp(Command):
    """Record that the requester of a call awaiting a step-up authenticated again, of the kind its policy names."""
    type: Literal["RecordStepUp"] = "RecordStepUp"
    tool_call_id: Id
    kind: Name
    subject: Name
    authenticated_at: Instant


class CompleteToolCall(Command):
    type: Literal["CompleteToolCall"] = "CompleteToolCall"
    tool_call_id: Id
    result_digest: Digest | None = None


class FailToolCall(Command):
    type: Literal["FailToolCall"] = "FailToolCall"
    tool_call_id: Id
    error: Text


class RequestApproval(Command):
    type: Literal["RequestApproval"] = "RequestApproval"
    approval_id: Id | None = None
    run_id: Id
    tool_call_id: Id | None = None
    action: Name
    risk_tier: RiskTier
    required_role: Name | None = None  # for a tool call: its policy's; else approver
    required_approvals: Annotated[Literal[1, 2], BeforeValidator(json_integer)] | None = None  # at least the policy's
    expires_in_seconds: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] = 3600


class GrantApproval(Command):
    type: Literal["GrantApproval"] = "GrantApproval"
    approval_id: Id
    reason: Text | None = None


class DenyApproval(Command):
    type: Literal["DenyApproval"] = "DenyApproval"
    approval_id: Id
    reason: Text


class ExpireApproval(Command):
    type: Literal["ExpireApproval"] = "ExpireApproval"
    approval_id: Id


class SetBudget(Command):
    type: Literal["SetBudget"] = "SetBudget"
    project: Name
    period: Literal["day", "month", "total"]
    limit_micros: Micros
    currency: Currency


class RecordCost(Command):
    type: Literal["RecordCost"] = "RecordCost"
    cost_id: Id | None = None
    run_id: Id | None = None
    project: Name | None = None
    provider: Name
    model: Name
    tokens_in: Count = 0
    tokens_out: Count = 0
    amount_micros: Micros
    currency: Currency


class PlaceLegalHold(Command):
    """Hold what the scope covers; `tenant_id` names another tenant (platform super_admin only)."""
    type: Literal["PlaceLegalHold"] = "PlaceLegalHold"
    hold_id: Id | None = None
    tenant_id: TenantName | None = None
    matter: Name
    reason: Text
    scope: HoldScope


class ReleaseLegalHold(Command):
    type: Literal["ReleaseLegalHold"] = "ReleaseLegalHold"
    hold_id: Id
    tenant_id: TenantName | None = None
    reason: Text


class SetRetentionPolicy(Command):
    type: Literal["SetRetentionPolicy"] = "SetRetentionPolicy"
    record_class: RecordClass
    days: Annotated[int, Field(ge=0, le=100 * 366)]


class SweepRetention(Command):
    """Remove up to `limit` expired, un-held run families of a record class from its read models."""
    type: Literal["SweepRetention"] = "SweepRetention"
    record_class: RecordClass
    tenant_id: TenantName | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 500


class SetContentPolicy(Command):
    """Store content fields encrypted per author (true), or record only that they were given (false, the default)."""
    type: Literal["SetContentPolicy"] = "SetContentPolicy"
    store_content: bool


class ShredSubject(Command):
    """Destroy a data subject's content keys: what they wrote becomes unreadable everywhere; chains still verify."""
    type: Literal["ShredSubject"] = "ShredSubject"
    subject: Name
    tenant_id: TenantName | None = None
    reason: Text


AnyCommand = Annotated[Union[
    RequestRun, StartRun, StartStep, FinishStep, CompleteRun, FailRun, RetryRun, CancelRun,
    ResumeRun, ForceFailRun, SetRunDeadline, RequestToolCall, DecidePolicy, CompleteToolCall, FailToolCall,
    RequestApproval, GrantApproval, DenyApproval, ExpireApproval, SetBudget, RecordCost,
    PlaceLegalHold, ReleaseLegalHold, SetRetentionPolicy, SweepRetention, SetContentPolicy, ShredSubject,
    SignCheckpoint, RecordExport, RequestExport, FailExport,
    PublishPolicy, ActivatePolicy, RecordStepUp,
    RecordVerification,
], Field(discriminator="type")]

COMMAND_TYPES = {c.model_fields["type"].default: c for c in AnyCommand.__origin__.__args__}
