"""Command handlers: plain functions deciding one command against a tenant's aggregates."""
from datetime import timedelta
from typing import Callable
from uuid import UUID

from domain import commands as c
from domain.approval import Approval
from domain.budget import Budget, budget_id, check_run_cap
from domain.context import Context, made_id
from domain.errors import InvalidCommand, InvalidState
from domain.evidence import fail_export, record_export, request_export, sign_checkpoint
from domain.evidence import record_verification
from domain.governing import GOVERNANCE_HANDLERS
from domain.policing import POLICY_HANDLERS, decide_policy, request_tool_call
from domain.run import Run, RunDefaults, run_defaults_id
from domain.tool_call import ToolCall

OPERATORS = frozenset({"operator", "admin"})
ANYONE = frozenset()


def request_run(cmd: c.RequestRun, ctx: Context) -> UUID:
    budget = ctx.find(Budget, budget_id(ctx.tenant_id, cmd.project))
    if budget is not None:
        budget.check_room_for_run(ctx.now_iso)
    run_id = ctx.new_id(cmd.run_id)  # the given id (as a UUID, not parsed again) unless the tenant has it
    return ctx.add(Run.request(run_id if cmd.run_id is None else cmd.run_id, cmd.agent_id, cmd.project, cmd.budget_micros,
                               ctx.labels(dict(cmd.labels)), deadline_of(cmd.deadline_s, ctx)))


def deadline_of(deadline_s: int | None, ctx: Context) -> str | None:
    """When a run requested now is due: its own deadline, else the tenant's default, else never."""
    defaults = ctx.aggregates.get(run_defaults_id(ctx.tenant_id))
    seconds = deadline_s if deadline_s is not None else defaults.deadline_s if defaults else None
    return ctx.iso(ctx.now + timedelta(seconds=seconds)) if seconds is not None else None


def set_run_deadline(cmd: c.SetRunDeadline, ctx: Context) -> UUID:
    defaults = ctx.find(RunDefaults, run_defaults_id(ctx.tenant_id))
    if defaults is None:
        defaults = RunDefaults.open(ctx.tenant_id)
        ctx.add(defaults)
    defaults.set_deadline(cmd.deadline_s)
    return defaults.id


def start_run(cmd: c.StartRun, ctx: Context) -> UUID:
    ctx.get(Run, cmd.run_id).start()
    return cmd.run_id


def start_step(cmd: c.StartStep, ctx: Context) -> UUID:
    run = ctx.get(Run, cmd.run_id)
    step_id = ctx.new_step_id(cmd.step_id)
    run.start_step(step_id, cmd.kind, cmd.name)
    return made_id(step_id)


def finish_step(cmd: c.FinishStep, ctx: Context) -> UUID:
    error = ctx.content(cmd.error)
    ctx.get(Run, cmd.run_id).finish_step(str(cmd.step_id), cmd.outcome, error)
    return cmd.step_id


def complete_run(cmd: c.CompleteRun, ctx: Context) -> UUID:
    ctx.get(Run, cmd.run_id).succeed()
    return cmd.run_id


def fail_run(cmd: c.FailRun, ctx: Context) -> UUID:
    error = ctx.content(cmd.error)
    ctx.get(Run, cmd.run_id).fail(error)
    return cmd.run_id


def retry_run(cmd: c.RetryRun, ctx: Context) -> UUID:
    ctx.get(Run, cmd.run_id).retry()
    return cmd.run_id


def cancel_run(cmd: c.CancelRun, ctx: Context) -> UUID:
    reason = ctx.content(cmd.reason)
    ctx.get(Run, cmd.run_id).cancel(reason)
    return cmd.run_id


def resume_run(cmd: c.ResumeRun, ctx: Context) -> UUID:
    reason = ctx.content(cmd.reason)
    ctx.get(Run, cmd.run_id).resume(reason)
    return cmd.run_id


def force_fail_run(cmd: c.ForceFailRun, ctx: Context) -> UUID:
    run = ctx.get(Run, cmd.run_id)
    if "admin" not in ctx.actor.roles:
        run.check_stuck(ctx.now)
    run.force_fail(ctx.content(cmd.reason))
    return cmd.run_id


def complete_tool_call(cmd: c.CompleteToolCall, ctx: Context) -> UUID:
    ctx.get(ToolCall, cmd.tool_call_id).complete(cmd.result_digest)
    return cmd.tool_call_id


def fail_tool_call(cmd: c.FailToolCall, ctx: Context) -> UUID:
    error = ctx.content(cmd.error)
    ctx.get(ToolCall, cmd.tool_call_id).fail(error)
    return cmd.tool_call_id


def request_approval(cmd: c.RequestApproval, ctx: Context) -> UUID:
    run = ctx.get(Run, cmd.run_id)
    run.check_state("running", "waiting_for_approval", action="request an approval in")
    count, role = cmd.required_approvals or 1, cmd.required_role or "approver"
    if cmd.tool_call_id is not None:
        call = ctx.get(ToolCall, cmd.tool_call_id)
        check_tool_call_awaits_approval(call, str(cmd.run_id))
        count, role = call.approval_terms(cmd.required_approvals, cmd.required_role)
    approval_id = ctx.new_id(cmd.approval_id)
    action = ctx.content(cmd.action)
    expires_at = ctx.iso(ctx.now + timedelta(seconds=cmd.expires_in_seconds))
    ctx.add(Approval.request(approval_id, str(cmd.run_id), ctx.str_or_none(cmd.tool_call_id),
                             action, cmd.risk_tier, role, count, ctx.actor.subject, expires_at))
    run.wait_for_approval(approval_id)
    return made_id(approval_id)


def check_tool_call_awaits_approval(tool_call: ToolCall, run_id: str) -> None:
    if tool_call.run_id != run_id:
        raise InvalidCommand(f"tool call {tool_call.id} belongs to run {tool_call.run_id}",
                             "wrong_run")
    if tool_call.state != "awaiting_approval":
        raise InvalidState(f"tool call {tool_call.id} is {tool_call.state}, not awaiting approval")


def grant_approval(cmd: c.GrantApproval, ctx: Context) -> UUID:
    reason = ctx.content(cmd.reason)
    approval = ctx.get(Approval, cmd.approval_id)
    if approval.grant(ctx.actor.subject, ctx.actor.roles, reason, ctx.now_iso):
        resolve(approval, "granted", ctx)
    return cmd.approval_id


def deny_approval(cmd: c.DenyApproval, ctx: Context) -> UUID:
    reason = ctx.content(cmd.reason)
    approval = ctx.get(Approval, cmd.approval_id)
    approval.deny(ctx.actor.subject, ctx.actor.roles, reason, ctx.now_iso)
    resolve(approval, "denied", ctx)
    return cmd.approval_id


def expire_approval(cmd: c.ExpireApproval, ctx: Context) -> UUID:
    approval = ctx.get(Approval, cmd.approval_id)
    approval.expire(ctx.now_iso)
    resolve(approval, "expired", ctx)
    return cmd.approval_id


def resolve(approval: Approval, outcome: str, ctx: Context) -> None:
    approval_id = str(approval.id)
    if approval.tool_call_id:
        ctx.get(ToolCall, UUID(approval.tool_call_id)).approval_resolved(approval_id, outcome)
    ctx.get(Run, UUID(approval.run_id)).approval_resolved(approval_id, outcome)


def set_budget(cmd: c.SetBudget, ctx: Context) -> UUID:
    budget = open_budget(cmd.project, ctx)
    budget.set_limit(cmd.period, cmd.limit_micros, cmd.currency)
    return budget.id


def record_cost(cmd: c.RecordCost, ctx: Context) -> UUID:
    run = ctx.get(Run, cmd.run_id) if cmd.run_id is not None else None
    if run is not None and cmd.project not in (None, run.project):
        raise InvalidCommand(f"run {run.id} belongs to project {run.project!r}, not "
                             f"{cmd.project!r}", "wrong_project")
    project = run.project if run is not None else (cmd.project or "default")
    budget = ctx.find(Budget, budget_id(ctx.tenant_id, project))
    run_cap = run.budget_micros if run is not None else None
    cost_id = ctx.new_id(cmd.cost_id)
    if budget is None:
        check_run_cap(ctx.str_or_none(cmd.run_id), run_cap, 0, cmd.amount_micros)
        budget = open_budget(project, ctx)
    budget.record_cost(cost_id, ctx.str_or_none(cmd.run_id), cmd.provider, cmd.model,
                       cmd.tokens_in, cmd.tokens_out, cmd.amount_micros, cmd.currency,
                       run_cap, ctx.now_iso)
    return made_id(cost_id)


def open_budget(project: str, ctx: Context) -> Budget:
    budget = ctx.find(Budget, budget_id(ctx.tenant_id, project))
    if budget is None:
        budget = Budget.open(ctx.tenant_id, project)
        ctx.add(budget)
    return budget


Handler = Callable[[c.Command, Context], UUID]

HANDLERS: dict[type, tuple[Handler, frozenset[str]]] = {
    c.RequestRun: (request_run, OPERATORS),
    c.StartRun: (start_run, OPERATORS),
    c.StartStep: (start_step, OPERATORS),
    c.FinishStep: (finish_step, OPERATORS),
    c.CompleteRun: (complete_run, OPERATORS),
    c.FailRun: (fail_run, OPERATORS),
    c.RetryRun: (retry_run, OPERATORS),
    c.CancelRun: (cancel_run, OPERATORS),
    c.ResumeRun: (resume_run, OPERATORS),
    c.ForceFailRun: (force_fail_run, OPERATORS),  # an operator only once the run is stuck (Run.check_stuck)
    c.SetRunDeadline: (set_run_deadline, frozenset({"admin"})),
    c.RequestToolCall: (request_tool_call, OPERATORS),
    c.DecidePolicy: (decide_policy, frozenset({"policy", "admin"})),
    c.CompleteToolCall: (complete_tool_call, OPERATORS),
    c.FailToolCall: (fail_tool_call, OPERATORS),
    c.RequestApproval: (request_approval, OPERATORS),
    c.GrantApproval: (grant_approval, ANYONE),
    c.DenyApproval: (deny_approval, ANYONE),
    c.ExpireApproval: (expire_approval, frozenset({"system"})),
    c.SetBudget: (set_budget, frozenset({"admin"})),
    c.RecordCost: (record_cost, OPERATORS),
    **GOVERNANCE_HANDLERS,
    **POLICY_HANDLERS,
    c.SignCheckpoint: (sign_checkpoint, frozenset({"system"})),
    c.RecordExport: (record_export, frozenset({"auditor", "admin"})),
    c.RequestExport: (request_export, frozenset({"auditor", "admin"})),
    c.FailExport: (fail_export, frozenset({"auditor", "admin"})),
    c.RecordVerification: (record_verification, frozenset({"auditor", "admin", "system"})),
}
