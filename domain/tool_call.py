from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.content import Content
from domain.errors import InvalidState

RISK_TIERS = ("low", "medium", "high", "critical")
DECISIONS = ("ALLOW", "DENY", "REQUIRE_APPROVAL")


class ToolCall(Aggregate):
    """A tool call: requested → policy decision → completed | failed | blocked. A DENY is final."""

    class Requested(Aggregate.Created):
        run_id: str
        tool: str
        risk_tier: str
        params_digest: str
        step_id: str | None

    class PolicyDecided(Aggregate.Event):
        decision: str
        policy_id: str
        policy_version: str
        reason: Content

    class Approved(Aggregate.Event):
        approval_id: str

    class Blocked(Aggregate.Event):
        reason: Content

    class Completed(Aggregate.Event):
        result_digest: str | None

    class Failed(Aggregate.Event):
        error: Content

    @classmethod
    def request(cls, tool_call_id: str, run_id: str, tool: str, risk_tier: str,
                params_digest: str, step_id: str | None) -> "ToolCall":
        return cls._create(cls.Requested, id=UUID(tool_call_id), run_id=run_id, tool=tool,
                           risk_tier=risk_tier, params_digest=params_digest, step_id=step_id)

    @event(Requested)
    def __init__(self, run_id: str, tool: str, risk_tier: str, params_digest: str,
                 step_id: str | None):
        self.run_id = run_id
        self.tool = tool
        self.risk_tier = risk_tier
        self.params_digest = params_digest
        self.step_id = step_id
        self.state = "requested"
        self.decision: str | None = None

    def check_state(self, *allowed: str, action: str) -> None:
        if self.state not in allowed:
            raise InvalidState(f"cannot {action} tool call {self.id}: it is {self.state}")

    def decide(self, decision: str, policy_id: str, policy_version: str, reason: str) -> None:
        if self.decision == "DENY":
            raise InvalidState(f"tool call {self.id} was denied by policy; a DENY is final",
                               "decision_final")
        self.check_state("requested", action="record a policy decision for")
        self._decided(decision=decision, policy_id=policy_id, policy_version=policy_version,
                      reason=reason)

    @event(PolicyDecided)
    def _decided(self, decision: str, policy_id: str, policy_version: str, reason: str) -> None:
        self.decision = decision
        self.state = {"ALLOW": "allowed", "DENY": "blocked",
                      "REQUIRE_APPROVAL": "awaiting_approval"}[decision]

    def approval_resolved(self, approval_id: str, outcome: str) -> None:
        if self.state != "awaiting_approval":
            return
        if outcome == "granted":
            self._approved(approval_id=approval_id)
        else:
            self._blocked(reason=f"approval {approval_id} {outcome}")

    @event(Approved)
    def _approved(self, approval_id: str) -> None:
        self.state = "allowed"

    @event(Blocked)
    def _blocked(self, reason: str) -> None:
        self.state = "blocked"

    def complete(self, result_digest: str | None) -> None:
        self.check_state("allowed", action="complete")
        self._completed(result_digest=result_digest)

    @event(Completed)
    def _completed(self, result_digest: str | None) -> None:
        self.state = "completed"

    def fail(self, error: str) -> None:
        self.check_state("allowed", action="fail")
        self._failed(error=error)

    @event(Failed)
    def _failed(self, error: str) -> None:
        self.state = "failed"
