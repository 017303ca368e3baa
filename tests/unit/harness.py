"""Drive a TenantLedger directly: pure, no Kafka."""
import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

from domain.ledger import TenantLedger, expire_command

OPERATOR = {"subject": "agent-1", "roles": ["operator"]}
POLICY = {"subject": "policy-engine", "roles": ["policy"]}
ADMIN = {"subject": "root", "roles": ["admin"]}


def approver(name: str, *roles: str) -> dict:
    return {"subject": name, "roles": list(roles) or ["approver"]}


class Harness:
    def __init__(self, tenant: str = "acme"):
        self.ledger = TenantLedger(tenant)
        self.log: list[dict] = []
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)

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

    def tool_call(self, run_id: str, decision: str) -> str:
        call = self.ok({"type": "RequestToolCall", "run_id": run_id, "tool": "shell",
                        "risk_tier": "high", "params_digest": "0" * 64})
        self.ok({"type": "DecidePolicy", "tool_call_id": call, "decision": decision,
                 "policy_id": "p", "policy_version": "7", "reason": "because"}, POLICY)
        return call

    def approval(self, run_id: str, call: str | None = None, count: int = 1,
                 expires: int = 60, role: str = "approver") -> str:
        return self.ok({"type": "RequestApproval", "run_id": run_id, "tool_call_id": call,
                        "action": "do it", "risk_tier": "high", "required_approvals": count,
                        "expires_in_seconds": expires, "required_role": role})
