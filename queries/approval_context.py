"""What an approver sees beside an approval: the tool call it decides, and the policy decision behind it.

The approval is in the approvals read model; its tool call, with the decision, policy and reason, is in
the runs model, which approvers cannot query themselves (runs are for operators). This reads exactly
those tool calls, for a page of approvals at once, and opens their content fields for the caller.
"""
from queries.readmodels import ReadModels

TOOL_CALL = ("tool_call_id, tool, risk_tier, state, decision, policy_id, policy_version, decision_reason, "
             "requested_at, decided_at")


async def with_tool_calls(models: ReadModels, tenant_id: str, approvals: list[dict], min_seq: int | None,
                          wait_ms: int) -> list[dict]:
    """Add `tool_call` (null for an approval of no tool call) to each approval of the tenant."""
    ids = sorted({str(a["tool_call_id"]) for a in approvals if a.get("tool_call_id")})
    calls: dict[str, dict] = {}
    if ids:
        await models.wait_for("runs", tenant_id, min_seq, wait_ms)
        rows = await models.fetch("runs", f"SELECT {TOOL_CALL} FROM {{s}}.tool_calls WHERE tenant_id = %s "
                                          "AND tool_call_id = ANY(%s::uuid[])", (tenant_id, ids))
        await models.reader.reveal(tenant_id, [(row, "decision_reason") for row in rows])
        calls = {str(row["tool_call_id"]): row for row in rows}
    for approval in approvals:
        approval["tool_call"] = calls.get(str(approval.get("tool_call_id")))
    return approvals
