"""The request a tool call is evaluated on, built from the command and the ledger's own state.

Labels and every other content field stay out: they may be sealed per author (domain/content.py),
and a decision must not depend on what a shred later makes unreadable. Costs come from the
project's Budget aggregate, call counts from the calls folded from the log (domain/calls.py).
"""
from typing import Any

from domain.budget import Budget, budget_id
from domain.calls import CallWindows
from domain.policy import RISK
from domain.policy_source import WINDOWS
from domain.run import Run


def budget_facts(run: Run, budget: Budget | None, now_iso: str) -> dict[str, int]:
    run_cost = budget.spent_by_run.get(str(run.id), 0) if budget else 0
    project_cost = budget.spent(now_iso) if budget else 0
    rooms = []
    if budget is not None and budget.limit_micros is not None:
        rooms.append(budget.limit_micros - project_cost)
    if run.budget_micros is not None:
        rooms.append(run.budget_micros - run_cost)
    facts = {"run_cost_micros": run_cost, "project_cost_micros": project_cost}
    if rooms:
        facts["budget_room_micros"] = min(rooms)
    return facts


def call_counts(calls: CallWindows, agent: str, tool: str, now_iso: str) -> dict[str, int]:
    return {name: calls.count(agent, tool, now_iso, window_s) for window_s, name in WINDOWS.items()}


def tool_call_request(cmd: Any, run: Run, actor: Any, budget: Budget | None, calls: CallWindows,
                      now_iso: str) -> dict[str, Any]:
    """Principal (the run's agent as this actor), action (read or write), resource (the run), context."""
    context: dict[str, Any] = {"tool": cmd.tool, "risk_tier": cmd.risk_tier, "risk": RISK[cmd.risk_tier],
                               **budget_facts(run, budget, now_iso),
                               **call_counts(calls, run.agent_id, cmd.tool, now_iso)}
    for name in ("operation", "environment"):
        if getattr(cmd, name) is not None:
            context[name] = getattr(cmd, name)
    return {"principal": {"type": "Agent", "id": run.agent_id,
                          "attrs": {"subject": actor.subject, "roles": sorted(set(actor.roles))}},
            "action": {"type": "Action", "id": cmd.access or "write"},
            "resource": {"type": "Run", "id": str(run.id), "attrs": {"project": run.project, "agent": run.agent_id}},
            "context": context}


def project_budget(ctx: Any, run: Run) -> Budget | None:
    return ctx.find(Budget, budget_id(ctx.tenant_id, run.project))
