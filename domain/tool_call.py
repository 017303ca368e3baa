from datetime import timedelta
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.content import Content
from domain.errors import Forbidden, InvalidCommand, InvalidState
from domain.events import create, event
from domain.policy import Decision
from domain.policy_source import DEFAULT_APPROVER_ROLE, DEFAULT_EXTERNAL_TTL_S
from schemas.envelope import parse_iso

RISK_TIERS = ("low", "medium", "high", "critical")
DECISIONS = ("ALLOW", "DENY", "REQUIRE_APPROVAL", "REQUIRE_STEP_UP", "THROTTLE", "EXTERNAL")
STATES = {"ALLOW": "allowed", "DENY": "blocked", "REQUIRE_APPROVAL": "awaiting_approval",
          "REQUIRE_STEP_UP": "awaiting_step_up", "THROTTLE": "throttled", "EXTERNAL": "awaiting_decision"}
CLOCK_SKEW_S = 5


def check_fresh(at_iso: str, now_iso: str, max_age_s: int, what: str, code: str) -> None:
    now = parse_iso(now_iso)
    if parse_iso(at_iso) > now + timedelta(seconds=CLOCK_SKEW_S):
        raise InvalidCommand(f"{what} at {at_iso} is later than now ({now_iso})", code)
    if parse_iso(at_iso) < now - timedelta(seconds=max_age_s):
        raise InvalidCommand(f"{what} at {at_iso} is older than {max_age_s} s (now {now_iso}); it is refused", code)


class ToolCall(Aggregate):
    """A tool call: requested and decided by policy → completed | failed | blocked | throttled. A DENY is final.

    The decision is evaluated when the call is requested (domain/policy.py); an envelope may hand
    it to an external engine (EXTERNAL), whose DecidePolicy then decides it.
    """

    class Requested(Aggregate.Created):
        class_version = 2
        run_id: str
        tool: str
        risk_tier: str
        params_digest: str
        step_id: str | None
        requested_by: str | None
        agent_id: str | None
        access: str | None
        operation: str | None
        environment: str | None

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state.update(requested_by=None, agent_id=None, access=None, operation=None, environment=None)

    class PolicyDecided(Aggregate.Event):
        class_version = 2
        decision: str
        policy_id: str | None
        policy_version: str | None
        reason: Content
        digest: str | None
        determining: list[str]
        cause: str | None
        obligations: dict
        source: str
        evaluated_at: str | None
        bundle_revision: str | None
        request: dict | None

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state.update(digest=None, determining=[], cause=None, obligations={}, source="external",
                         evaluated_at=None, bundle_revision=None, request=None)

    class ViolationRecorded(Aggregate.Event):
        risk_tier: str
        tool: str
        agent_id: str | None
        requested_by: str | None
        policy_id: str | None
        policy_version: str | None
        digest: str | None
        determining: list[str]
        cause: str | None
        reason: str

    class SteppedUp(Aggregate.Event):
        kind: str
        subject: str
        authenticated_at: str
        recorded_by: str

    class Approved(Aggregate.Event):
        approval_id: str

    class Blocked(Aggregate.Event):
        reason: Content

    class Completed(Aggregate.Event):
        result_digest: str | None

    class Failed(Aggregate.Event):
        error: Content

    @classmethod
    def request(cls, tool_call_id: str, run_id: str, tool: str, risk_tier: str, params_digest: str,
                step_id: str | None, requested_by: str | None = None, agent_id: str | None = None,
                access: str | None = None, operation: str | None = None,
                environment: str | None = None) -> "ToolCall":
        return create(cls, cls.Requested, id=UUID(tool_call_id), run_id=run_id, tool=tool, risk_tier=risk_tier,
                           params_digest=params_digest, step_id=step_id, requested_by=requested_by,
                           agent_id=agent_id, access=access, operation=operation, environment=environment)

    @event(Requested)
    def __init__(self, run_id: str, tool: str, risk_tier: str, params_digest: str, step_id: str | None,
                 requested_by: str | None, agent_id: str | None, access: str | None, operation: str | None,
                 environment: str | None):
        self.run_id, self.tool, self.risk_tier = run_id, tool, risk_tier
        self.params_digest, self.step_id = params_digest, step_id
        self.requested_by, self.agent_id = requested_by, agent_id
        self.access, self.operation, self.environment = access, operation, environment
        self.state = "requested"
        self.decision: str | None = None
        self.obligations: dict = {}

    def check_state(self, *allowed: str, action: str) -> None:
        if self.state not in allowed:
            raise InvalidState(f"cannot {action} tool call {self.id}: it is {self.state}")

    def decide_by_policy(self, decision: Decision, request: dict, evaluated_at: str) -> None:
        self.check_state("requested", action="evaluate the policy for")
        self._decided(**decision.evidence(), source="envelope", evaluated_at=evaluated_at, bundle_revision=None,
                      request=request)

    def check_external_decision(self, decider: str, decision: str, evaluated_at: str, now_iso: str) -> None:
        if self.decision == "DENY":
            raise InvalidState(f"tool call {self.id} was denied by policy; a DENY is final", "decision_final")
        self.check_state("requested", "awaiting_decision", action="record an external policy decision for")
        if decider == self.requested_by:
            raise Forbidden(f"{decider!r} requested tool call {self.id} and cannot record its decision",
                            "requester_cannot_decide")
        if self.requested_by is None and decision == "ALLOW":
            raise Forbidden(f"tool call {self.id} was recorded before requesters were, so no one can be shown not "
                            "to be its requester: it cannot be allowed; deny it or send it to approval",
                            "requester_unknown")
        ttl = self.obligations.get("ttl_s", DEFAULT_EXTERNAL_TTL_S)
        check_fresh(evaluated_at, now_iso, ttl, "the external decision evaluated", "stale_decision")

    def decide_externally(self, decider: str, decision: str, policy_id: str, policy_version: str, reason,
                          bundle_revision: str, evaluated_at: str, obligations: dict, now_iso: str) -> None:
        self.check_external_decision(decider, decision, evaluated_at, now_iso)
        self._decided(decision=decision, policy_id=policy_id, policy_version=policy_version, reason=reason,
                      digest=None, determining=[], cause="external" if decision == "DENY" else None,
                      obligations=obligations, source="external", evaluated_at=evaluated_at,
                      bundle_revision=bundle_revision, request=None)

    @event(PolicyDecided)
    def _decided(self, decision: str, policy_id: str | None, policy_version: str | None, reason, digest: str | None,
                 determining: list[str], cause: str | None, obligations: dict, source: str,
                 evaluated_at: str | None, bundle_revision: str | None, request: dict | None) -> None:
        self.decision = decision
        self.obligations = dict(obligations)
        self.state = STATES[decision]

    def record_violation(self, decision: Decision) -> None:
        self._violation(risk_tier=self.risk_tier, tool=self.tool, agent_id=self.agent_id,
                        requested_by=self.requested_by, policy_id=decision.policy_id,
                        policy_version=decision.policy_version, digest=decision.digest,
                        determining=list(decision.determining), cause=decision.cause, reason=decision.reason)

    @event(ViolationRecorded)
    def _violation(self, risk_tier: str, tool: str, agent_id: str | None, requested_by: str | None,
                   policy_id: str | None, policy_version: str | None, digest: str | None, determining: list[str],
                   cause: str | None, reason: str) -> None:
        pass

    def approval_terms(self, asked: int | None, role: str | None) -> tuple[int, str]:
        """The approvers an approval of this call needs: the policy's; a requester may ask for more, never fewer."""
        needed = self.obligations.get("approvals", 1)
        needed_role = self.obligations.get("approver_role", role or DEFAULT_APPROVER_ROLE)
        if asked is not None and asked < needed:
            raise InvalidCommand(f"the policy requires {needed} approvers for tool call {self.id}; "
                                 f"{asked} were asked for", "approvals_below_policy")
        if role is not None and role != needed_role:
            raise InvalidCommand(f"the policy requires approvers with the role {needed_role!r} for tool call "
                                 f"{self.id}, not {role!r}", "approver_role_mismatch")
        return max(asked or 0, needed), needed_role

    def record_step_up(self, kind: str, subject: str, authenticated_at: str, recorded_by: str, now_iso: str) -> None:
        self.check_state("awaiting_step_up", action="record a step-up for")
        wanted = self.obligations.get("step_up")
        if kind != wanted:
            raise InvalidCommand(f"tool call {self.id} needs a {wanted!r} step-up, not {kind!r}",
                                 "step_up_kind_mismatch")
        if subject != self.requested_by:
            raise InvalidCommand(f"the step-up must authenticate {self.requested_by!r}, who requested tool call "
                                 f"{self.id}, not {subject!r}", "step_up_wrong_subject")
        if recorded_by == self.requested_by:
            raise Forbidden(f"{recorded_by!r} requested tool call {self.id} and cannot record its step-up",
                            "requester_cannot_decide")
        check_fresh(authenticated_at, now_iso, self.obligations.get("max_age_s", 300), "the step-up authenticated",
                    "step_up_stale")
        self._stepped_up(kind=kind, subject=subject, authenticated_at=authenticated_at, recorded_by=recorded_by)

    @event(SteppedUp)
    def _stepped_up(self, kind: str, subject: str, authenticated_at: str, recorded_by: str) -> None:
        self.state = "allowed"

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


__all__ = ["ToolCall", "RISK_TIERS", "DECISIONS", "STATES"]
