"""Handlers of the policy commands: publish and activate envelopes; request, decide and step up tool calls."""
from uuid import UUID

from domain import commands as c
from domain.context import Context
from domain.errors import InvalidCommand, NotFound
from domain.policies import Policies, policies_id
from domain.policy import Decision, PolicyEnvelope, evaluate, validate
from domain.policy_request import project_budget, tool_call_request
from domain.run import Run
from domain.tool_call import ToolCall

ADMINS = frozenset({"admin"})
HIGH_RISK = frozenset({"high", "critical"})


def open_policies(ctx: Context) -> Policies:
    book = ctx.find(Policies, policies_id(ctx.tenant_id))
    if book is None:
        book = Policies.open(ctx.tenant_id)
        ctx.add(book)
    return book


def publish_policy(cmd: c.PublishPolicy, ctx: Context) -> UUID:
    envelope = PolicyEnvelope(cmd.policy_id, cmd.version, cmd.policies, cmd.cedar_schema)
    if cmd.digest is not None and cmd.digest != envelope.digest:
        raise InvalidCommand(f"the envelope's digest is {envelope.digest}, not {cmd.digest}: what was sent is not "
                             "what was reviewed", "policy_digest_mismatch")
    validate(envelope)
    existing = ctx.find(Policies, policies_id(ctx.tenant_id))
    if existing is not None:
        existing.check_publishable(envelope)
    book = open_policies(ctx)  # only now: a rejected command must leave no pending event
    book.publish(envelope, ctx.actor.subject)
    return book.id


def activate_policy(cmd: c.ActivatePolicy, ctx: Context) -> UUID:
    book = ctx.find(Policies, policies_id(ctx.tenant_id))
    if book is None:
        raise NotFound(f"no policy was published in tenant {ctx.tenant_id}; publish {cmd.policy_id!r} first",
                       "policy_not_published")
    book.activate(cmd.policy_id, cmd.version, (cmd.project, cmd.environment), ctx.actor.subject)
    return book.id


def request_tool_call(cmd: c.RequestToolCall, ctx: Context) -> UUID:
    """Record the call and the decision the active envelope gives it, in the one transaction."""
    run = ctx.get(Run, cmd.run_id)
    run.check_state("running", action="request a tool call in")
    if cmd.step_id is not None and str(cmd.step_id) not in run.steps:
        raise InvalidCommand(f"run {run.id} has no step {cmd.step_id}", "unknown_step")
    tool_call_id = ctx.new_id(cmd.tool_call_id)
    book = ctx.find(Policies, policies_id(ctx.tenant_id))
    envelope, scope = (book.active_for(run.project, cmd.environment) if book is not None
                       else (None, "the tenant"))
    request = tool_call_request(cmd, run, ctx.actor, project_budget(ctx, run), ctx.calls, ctx.now_iso)
    decision = evaluate(envelope, request, scope)
    call = ToolCall.request(tool_call_id, str(cmd.run_id), cmd.tool, cmd.risk_tier, cmd.params_digest,
                            ctx.str_or_none(cmd.step_id), ctx.actor.subject, run.agent_id, cmd.access,
                            cmd.operation, cmd.environment)
    ctx.add(call)
    call.decide_by_policy(decision, request, ctx.now_iso)
    if decision.kind == "DENY" and cmd.risk_tier in HIGH_RISK:
        call.record_violation(decision)
    return call.id


def decide_policy(cmd: c.DecidePolicy, ctx: Context) -> UUID:
    """An external engine's decision: named bundle revision, fresh, never the requester's own."""
    call = ctx.get(ToolCall, cmd.tool_call_id)
    obligations = {}
    if cmd.decision == "REQUIRE_APPROVAL":
        obligations = {"approvals": cmd.required_approvals or (2 if call.risk_tier in HIGH_RISK else 1),
                       "approver_role": cmd.required_role or "approver"}
    call.check_external_decision(ctx.actor.subject, cmd.decision, ctx.iso(cmd.evaluated_at), ctx.now_iso)
    reason = ctx.content(cmd.reason)
    call.decide_externally(ctx.actor.subject, cmd.decision, cmd.policy_id, cmd.policy_version, reason,
                           cmd.bundle_revision, ctx.iso(cmd.evaluated_at), obligations, ctx.now_iso)
    if cmd.decision == "DENY" and call.risk_tier in HIGH_RISK:
        call.record_violation(external_denial(cmd))
    return cmd.tool_call_id


def external_denial(cmd: c.DecidePolicy) -> Decision:
    return Decision("DENY", f"denied by the external engine (bundle {cmd.bundle_revision})",
                    policy_id=cmd.policy_id, policy_version=cmd.policy_version, cause="external")


def record_step_up(cmd: c.RecordStepUp, ctx: Context) -> UUID:
    call = ctx.get(ToolCall, cmd.tool_call_id)
    call.record_step_up(cmd.kind, cmd.subject, ctx.iso(cmd.authenticated_at), ctx.actor.subject, ctx.now_iso)
    return cmd.tool_call_id


POLICY_HANDLERS = {
    c.PublishPolicy: (publish_policy, ADMINS),
    c.ActivatePolicy: (activate_policy, ADMINS),
    c.RecordStepUp: (record_step_up, frozenset({"policy"})),  # the enforcement point that checked the assertion
}
