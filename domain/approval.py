from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.content import Content
from domain.errors import DomainError, Forbidden, InvalidState
from domain.events import create, event


class Approval(Aggregate):
    """A human-in-the-loop approval: requested → granted | denied | expired."""

    class Requested(Aggregate.Created):
        run_id: str
        tool_call_id: str | None
        action: Content
        risk_tier: str
        required_role: str
        required_approvals: int
        requested_by: str
        expires_at: str

    class VoteRecorded(Aggregate.Event):
        approver: str
        reason: Content | None

    class Granted(Aggregate.Event):
        approvers: list[str]

    class Denied(Aggregate.Event):
        approver: str
        reason: Content

    class Expired(Aggregate.Event):
        expired_at: str

    @classmethod
    def request(cls, approval_id: str, run_id: str, tool_call_id: str | None, action: str,
                risk_tier: str, required_role: str, required_approvals: int, requested_by: str,
                expires_at: str) -> "Approval":
        return create(cls, cls.Requested, id=UUID(approval_id), run_id=run_id,
                           tool_call_id=tool_call_id, action=action, risk_tier=risk_tier,
                           required_role=required_role, required_approvals=required_approvals,
                           requested_by=requested_by, expires_at=expires_at)

    @event(Requested)
    def __init__(self, run_id: str, tool_call_id: str | None, action: str, risk_tier: str,
                 required_role: str, required_approvals: int, requested_by: str,
                 expires_at: str):
        self.run_id = run_id
        self.tool_call_id = tool_call_id
        self.action = action
        self.risk_tier = risk_tier
        self.required_role = required_role
        self.required_approvals = required_approvals
        self.requested_by = requested_by
        self.expires_at = expires_at
        self.approvers: list[str] = []
        self.state = "pending"

    def check_pending(self, action: str) -> None:
        if self.state != "pending":
            raise InvalidState(f"cannot {action} approval {self.id}: it is already {self.state}")

    def check_may_decide(self, subject: str, roles: list[str], now_iso: str) -> None:
        self.check_pending("decide")
        if now_iso >= self.expires_at:
            raise InvalidState(f"approval {self.id} expired at {self.expires_at}", "expired")
        if subject == self.requested_by:
            raise Forbidden("the requester of an approval cannot decide it",
                            "requester_cannot_approve")
        if self.required_role not in roles:
            raise Forbidden(f"approving {self.id} needs the role {self.required_role!r}",
                            "missing_role")
        if subject in self.approvers:
            raise DomainError(f"{subject} has already approved {self.id}; one approver counts "
                              f"once", "already_approved")

    def grant(self, subject: str, roles: list[str], reason: str | None, now_iso: str) -> bool:
        """Record a vote; return True when it completes the approval."""
        self.check_may_decide(subject, roles, now_iso)
        self._vote(approver=subject, reason=reason)
        if len(self.approvers) >= self.required_approvals:
            self._granted(approvers=list(self.approvers))
            return True
        return False

    @event(VoteRecorded)
    def _vote(self, approver: str, reason: str | None) -> None:
        self.approvers.append(approver)

    @event(Granted)
    def _granted(self, approvers: list[str]) -> None:
        self.state = "granted"

    def deny(self, subject: str, roles: list[str], reason: str, now_iso: str) -> None:
        self.check_may_decide(subject, roles, now_iso)
        self._denied(approver=subject, reason=reason)

    @event(Denied)
    def _denied(self, approver: str, reason: str) -> None:
        self.state = "denied"

    def expire(self, now_iso: str) -> None:
        self.check_pending("expire")
        if now_iso < self.expires_at:
            raise InvalidState(f"approval {self.id} does not expire before {self.expires_at}")
        self._expired(expired_at=self.expires_at)

    @event(Expired)
    def _expired(self, expired_at: str) -> None:
        self.state = "expired"
