"""Drive a TenantLedger directly: pure, no Kafka."""
import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

from domain.ledger import TenantLedger, expire_command
from domain.policy import REQUEST_SCHEMA

OPERATOR = {"subject": "agent-1", "roles": ["operator"]}
POLICY = {"subject": "policy-engine", "roles": ["policy"]}
ADMIN = {"subject": "root", "roles": ["admin"]}


# Each decision a test asks for, reached by a policy: the call's `operation` names it.
HARNESS_POLICIES = """
@id("allow") permit(principal, action, resource) when { context has operation && context.operation == "allow" };
@id("approve") @decision("REQUIRE_APPROVAL") @approvals("1")
permit(principal, action, resource) when { context has operation && context.operation == "require_approval" };
@id("external") @decision("EXTERNAL")
permit(principal, action, resource) when { context has operation && context.operation == "external" };
"""


def envelope(policies: str, version: str = "1.0.0", policy_id: str = "harness", **extra) -> dict:
    return {"type": "PublishPolicy", "policy_id": policy_id, "version": version, "policies": policies,
            "cedar_schema": REQUEST_SCHEMA, **extra}


def approver(name: str, *roles: str) -> dict:
    return {"subject": name, "roles": list(roles) or ["approver"]}


class Harness:
    def __init__(self, tenant: str = "acme"):
        self.ledger = TenantLedger(tenant)
        self.log: list[dict] = []
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
        self.policy_ready = False

    def send(self, body: dict, actor: dict = OPERATOR, key: str | None = None,
             expected_version: int | None = None) -> dict:
        command_id = str(uuid.uuid4())
        command = {"command_id": command_id, "tenant_id": self.ledger.tenant_id,
                   "idempotency_key": key, "actor": actor, "body": body,
                   "expected_version": expected_version,
                   "request_digest": hashlib.sha256(json.dumps([body, expected_version], sort_keys=True).encode()).hexdigest()}
        reply, envelopes = self.ledger.execute(command, self.now)
        self.log.extend(envelopes)
        return reply

    def ok(self, body: dict, actor: dict = OPERATOR, **kw) -> str:
        reply = self.send(body, actor, **kw)
        assert reply["status"] == "accepted", reply
        return reply["aggregate_id"]

    def rejected(self, body: dict, actor: dict = OPERATOR, **kw) -> str:
        before = len(self.log)
        reply = self.send(body, actor, **kw)
        assert reply["status"] == "rejected", reply
        assert len(self.log) == before
        return reply["code"]

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def fire_timers(self) -> list[str]:
        fired = []
        for approval_id in self.ledger.due_expiries(self.now):
            reply, envelopes = self.ledger.execute(
                expire_command(self.ledger.tenant_id, approval_id, self.now), self.now)
            self.log.extend(envelopes)
            fired.append(approval_id)
        return fired

    def types(self) -> list[str]:
        return [e["type"] for e in self.log]

    def running_run(self, **extra) -> str:
        run_id = self.ok({"type": "RequestRun", "agent_id": "a", **extra})
        self.ok({"type": "StartRun", "run_id": run_id})
        return run_id

    def activate(self, policies: str = HARNESS_POLICIES, version: str = "1.0.0", policy_id: str = "harness",
                 **scope) -> None:
        self.ok(envelope(policies, version, policy_id), ADMIN)
        self.ok({"type": "ActivatePolicy", "policy_id": policy_id, "version": version, **scope}, ADMIN)
        self.policy_ready = self.policy_ready or policy_id == "harness"

    def request_call(self, run_id: str, operation: str | None = None, risk: str = "high", tool: str = "shell",
                     actor: dict = OPERATOR, **extra) -> dict:
        body = {"type": "RequestToolCall", "run_id": run_id, "tool": tool, "risk_tier": risk,
                "params_digest": "0" * 64, **({"operation": operation} if operation else {}), **extra}
        return self.send(body, actor)

    def tool_call(self, run_id: str, decision: str) -> str:
        """A high-risk call of `shell` that the harness envelope decides as asked (DENY: by default)."""
        if not self.policy_ready:
            self.activate()
        reply = self.request_call(run_id, decision.lower())
        assert (reply["status"], reply["decision"]["decision"]) == ("accepted", decision), reply
        return reply["aggregate_id"]

    def external_decision(self, call: str, decision: str, actor: dict = POLICY, age_s: float = 0,
                          **extra) -> dict:
        return self.send({"type": "DecidePolicy", "tool_call_id": call, "decision": decision, "policy_id": "opa",
                          "policy_version": "7", "bundle_revision": "bundle-42",
                          "evaluated_at": (self.now - timedelta(seconds=age_s)).isoformat(),
                          "reason": "because", **extra}, actor)

    def approval(self, run_id: str, call: str | None = None, count: int | None = None,
                 expires: int = 60, role: str | None = None) -> str:
        return self.ok({"type": "RequestApproval", "run_id": run_id, "tool_call_id": call,
                        "action": "do it", "risk_tier": "high", "expires_in_seconds": expires,
                        **({"required_approvals": count} if count is not None else {}),
                        **({"required_role": role} if role is not None else {})})
