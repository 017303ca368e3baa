"""A realistic, deterministic command mix for tests and benchmarks.

Every id is chosen by the client, so a whole workload can be generated up front and sent in
order; each command is valid given the ones before it in the same tenant.
"""
import hashlib
import random
import uuid
from dataclasses import dataclass
from typing import Iterator

OPERATOR = ("agent", ("operator",))
ADMIN = ("admin", ("admin",))
# The tenant's envelope decides each call as the workload drew it: the call's `operation` names the outcome,
# and what no permit matches (deny) is denied by default.
POLICIES = """
@id("allow") permit(principal, action, resource) when { context has operation && context.operation == "allow" };
@id("approve") @decision("REQUIRE_APPROVAL") @approvals("1")
permit(principal, action, resource) when { context has operation && context.operation == "require_approval" };
"""


@dataclass(frozen=True)
class Step:
    tenant: str
    body: dict
    subject: str
    roles: tuple[str, ...]


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_script(tenant: str, rng: random.Random) -> Iterator[Step]:
    """One agent run: steps, tool calls with every kind of decision, approvals, costs, an ending."""
    def op(body):
        return Step(tenant, body, *OPERATOR)
    run_id = _id(rng)
    yield op({"type": "RequestRun", "run_id": run_id, "agent_id": rng.choice(["support", "refunds", "deploy"]),
              "project": rng.choice(["alpha", "beta"]), "labels": {"env": rng.choice(["prod", "staging"])}})
    yield op({"type": "StartRun", "run_id": run_id})
    for n in range(rng.randint(1, 4)):
        step_id = _id(rng)
        yield op({"type": "StartStep", "run_id": run_id, "step_id": step_id, "kind": "llm", "name": f"think-{n}"})
        yield op({"type": "RecordCost", "run_id": run_id, "provider": "anthropic", "model": rng.choice(["opus", "haiku"]),
                  "tokens_in": rng.randint(100, 5000), "tokens_out": rng.randint(10, 800),
                  "amount_micros": rng.randint(100, 20000), "currency": "USD"})
        yield op({"type": "FinishStep", "run_id": run_id, "step_id": step_id,
                  "outcome": rng.choice(["succeeded", "succeeded", "failed"]), "error": None})
        yield from tool_call(tenant, run_id, rng)
    ending = rng.random()
    if ending < 0.7:
        yield op({"type": "CompleteRun", "run_id": run_id})
    elif ending < 0.85:
        yield op({"type": "FailRun", "run_id": run_id, "error": "tool unavailable"})
        yield op({"type": "RetryRun", "run_id": run_id})
        yield op({"type": "CancelRun", "run_id": run_id, "reason": "operator gave up"})
    else:
        yield op({"type": "CancelRun", "run_id": run_id, "reason": "user abort"})


def policy_steps(tenant: str, seed: int) -> list[Step]:
    """Publish and activate the envelope that decides the tenant's calls (no envelope: every call is denied).

    Its version is the seed's, so a later workload for the same tenants (a greater seed) publishes a greater one.
    """
    from domain.policy import REQUEST_SCHEMA
    version = f"1.0.{seed}"
    return [Step(tenant, {"type": "PublishPolicy", "policy_id": "default", "version": version,
                          "policies": POLICIES, "cedar_schema": REQUEST_SCHEMA}, *ADMIN),
            Step(tenant, {"type": "ActivatePolicy", "policy_id": "default", "version": version}, *ADMIN)]


def tool_call(tenant: str, run_id: str, rng: random.Random) -> Iterator[Step]:
    """A call the processor decides when it is requested (by the envelope of policy_steps)."""
    call_id = _id(rng)
    decision = rng.choice(["ALLOW", "ALLOW", "DENY", "REQUIRE_APPROVAL"])
    yield Step(tenant, {"type": "RequestToolCall", "run_id": run_id, "tool_call_id": call_id,
                        "tool": rng.choice(["search", "sql", "email", "refund"]),
                        "risk_tier": rng.choice(["low", "medium", "high"]),
                        "operation": decision.lower(), "params_digest": _digest(call_id)}, *OPERATOR)
    if decision == "REQUIRE_APPROVAL":
        approval_id = _id(rng)
        count = rng.choice([1, 2])
        yield Step(tenant, {"type": "RequestApproval", "run_id": run_id, "tool_call_id": call_id,
                            "approval_id": approval_id, "action": "run tool", "risk_tier": "high",
                            "required_approvals": count}, *OPERATOR)
        approvers = ["ann", "bob"][:count]
        if rng.random() < 0.8:
            for name in approvers:
                yield Step(tenant, {"type": "GrantApproval", "approval_id": approval_id, "reason": "ok"},
                           name, ("approver",))
        else:
            yield Step(tenant, {"type": "DenyApproval", "approval_id": approval_id, "reason": "too risky"},
                       "ann", ("approver",))
            return
    if decision != "DENY":
        yield Step(tenant, {"type": "CompleteToolCall", "tool_call_id": call_id, "result_digest": _digest("r")},
                   *OPERATOR)


def workload(tenants: list[str], runs_per_tenant: int, seed: int = 7) -> list[Step]:
    """Interleave the tenants' runs; within a tenant the order is the order to send."""
    rng = random.Random(seed)
    per_tenant = {t: policy_steps(t, seed) + [s for _ in range(runs_per_tenant) for s in run_script(t, rng)]
                  for t in tenants}
    steps, cursors = [], {t: 0 for t in tenants}
    while any(cursors[t] < len(per_tenant[t]) for t in tenants):
        for t in tenants:
            if cursors[t] < len(per_tenant[t]):
                steps.append(per_tenant[t][cursors[t]])
                cursors[t] += 1
    return steps
