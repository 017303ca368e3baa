from datetime import datetime
from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.content import Content
from domain.errors import InvalidState, NotFound
from domain.events import create, event

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def overdue_s(state: str, deadline_at: datetime | None, now: datetime) -> float | None:
    """How far a run is past its deadline while not yet ended (it is stuck), else None.

    The one rule for "stuck": the domain (who may force-fail) and the runs view both apply it, to
    recorded times and the asker's now, so no timer ever has to append anything for a run to be stuck.
    """
    if state in TERMINAL or deadline_at is None or now <= deadline_at:
        return None
    return (now - deadline_at).total_seconds()


@lru_cache(maxsize=4096)
def run_defaults_id(tenant_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"runledger:run-defaults:{tenant_id}")


def check_step_id_free(step_id: str, owner_run_id: str | None) -> None:
    """A step id names one step in its tenant, whichever run started it."""
    if owner_run_id is not None:
        raise InvalidState(f"step {step_id} already exists in run {owner_run_id}", "duplicate_step")


class Run(Aggregate):
    """An agent run: requested → running ⇄ waiting_for_approval → succeeded | failed | cancelled."""

    class Requested(Aggregate.Created):
        class_version = 2
        agent_id: str
        project: str
        budget_micros: int | None
        labels: dict[str, str]
        deadline_at: str | None  # RFC 3339; past it, a run not yet ended is stuck

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["deadline_at"] = None

    class Started(Aggregate.Event):
        pass

    class StepStarted(Aggregate.Event):
        step_id: str
        kind: str
        name: str
        attempt: int

    class StepFinished(Aggregate.Event):
        step_id: str
        outcome: str
        error: Content | None

    class WaitingForApproval(Aggregate.Event):
        approval_id: str

    class ApprovalResolved(Aggregate.Event):
        approval_id: str
        outcome: str

    class Resumed(Aggregate.Event):
        reason: Content

    class Succeeded(Aggregate.Event):
        pass

    class Failed(Aggregate.Event):
        error: Content

    class Retried(Aggregate.Event):
        attempt: int

    class Cancelled(Aggregate.Event):
        reason: Content

    class ForceFailed(Aggregate.Event):
        reason: Content

    @classmethod
    def request(cls, run_id: str | UUID, agent_id: str, project: str, budget_micros: int | None,
                labels: dict[str, str], deadline_at: str | None = None) -> "Run":
        run_id = run_id if type(run_id) is UUID else UUID(run_id)
        return create(cls, cls.Requested, id=run_id, agent_id=agent_id, project=project,
                           budget_micros=budget_micros, labels=labels, deadline_at=deadline_at)

    @event(Requested)
    def __init__(self, agent_id: str, project: str, budget_micros: int | None,
                 labels: dict[str, str], deadline_at: str | None):
        self.agent_id = agent_id
        self.project = project
        self.budget_micros = budget_micros
        self.labels = labels
        self.deadline_at = deadline_at
        self.state = "requested"
        self.attempt = 1
        self.steps: dict[str, dict] = {}
        self.waiting_on: set[str] = set()

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

    def check_state(self, *allowed: str, action: str) -> None:
        if self.state not in allowed:
            raise InvalidState(f"cannot {action} run {self.id}: it is {self.state}, "
                               f"expected {' or '.join(allowed)}")

    def check_not_terminal(self, action: str) -> None:
        if self.is_terminal:
            raise InvalidState(f"cannot {action} run {self.id}: it is already {self.state}")

    def start(self) -> None:
        self.check_state("requested", action="start")
        self._started()

    @event(Started)
    def _started(self) -> None:
        self.state = "running"

    def start_step(self, step_id: str, kind: str, name: str) -> None:
        self.check_state("running", action="start a step of")
        previous = [s for s in self.steps.values() if s["name"] == name and s["kind"] == kind]
        if step_id in self.steps:
            raise InvalidState(f"step {step_id} already exists in run {self.id}", "duplicate_step")
        self._step_started(step_id=step_id, kind=kind, name=name, attempt=len(previous) + 1)

    @event(StepStarted)
    def _step_started(self, step_id: str, kind: str, name: str, attempt: int) -> None:
        self.steps[step_id] = {"kind": kind, "name": name, "attempt": attempt, "outcome": None}

    def finish_step(self, step_id: str, outcome: str, error: str | None) -> None:
        step = self.steps.get(step_id)
        if step is None:
            raise NotFound(f"run {self.id} has no step {step_id}")
        if step["outcome"] is not None:
            raise InvalidState(f"step {step_id} already finished as {step['outcome']}")
        self.check_not_terminal("finish a step of")
        self._step_finished(step_id=step_id, outcome=outcome, error=error)

    @event(StepFinished)
    def _step_finished(self, step_id: str, outcome: str, error: str | None) -> None:
        self.steps[step_id]["outcome"] = outcome

    def wait_for_approval(self, approval_id: str) -> None:
        self.check_state("running", "waiting_for_approval", action="wait for an approval in")
        self._waiting(approval_id=approval_id)

    @event(WaitingForApproval)
    def _waiting(self, approval_id: str) -> None:
        self.state = "waiting_for_approval"
        self.waiting_on.add(approval_id)

    def approval_resolved(self, approval_id: str, outcome: str) -> None:
        if approval_id in self.waiting_on:
            self._approval_resolved(approval_id=approval_id, outcome=outcome)

    @event(ApprovalResolved)
    def _approval_resolved(self, approval_id: str, outcome: str) -> None:
        """Stop waiting on this approval; run again once none is left."""
        self.waiting_on.discard(approval_id)
        if not self.waiting_on and self.state == "waiting_for_approval":
            self.state = "running"

    def resume(self, reason: str) -> None:
        self.check_state("waiting_for_approval", action="resume")
        self._resumed(reason=reason)

    @event(Resumed)
    def _resumed(self, reason: str) -> None:
        self.waiting_on.clear()
        self.state = "running"

    def succeed(self) -> None:
        self.check_state("running", action="complete")
        self._succeeded()

    @event(Succeeded)
    def _succeeded(self) -> None:
        self.state = "succeeded"

    def fail(self, error: str) -> None:
        self.check_state("running", "waiting_for_approval", action="fail")
        self._failed(error=error)

    @event(Failed)
    def _failed(self, error: str) -> None:
        self.state = "failed"

    def retry(self) -> None:
        self.check_state("failed", action="retry")
        self._retried(attempt=self.attempt + 1)

    @event(Retried)
    def _retried(self, attempt: int) -> None:
        self.attempt = attempt
        self.state = "running"

    def cancel(self, reason: str) -> None:
        self.check_not_terminal("cancel")
        self._cancelled(reason=reason)

    @event(Cancelled)
    def _cancelled(self, reason: str) -> None:
        self.state = "cancelled"

    def overdue_s(self, now: datetime) -> float | None:
        deadline = datetime.fromisoformat(self.deadline_at.replace("Z", "+00:00")) if self.deadline_at else None
        return overdue_s(self.state, deadline, now)

    def check_stuck(self, now: datetime) -> None:
        """Only a stuck run may be force-failed by an operator (an admin may force-fail any run)."""
        self.check_not_terminal("force-fail")
        if self.overdue_s(now) is None:
            due = f"its deadline is {self.deadline_at}" if self.deadline_at else "it has no deadline"
            raise InvalidState(f"cannot force-fail run {self.id}: it is not stuck ({due}); an operator may "
                               "force-fail only a run past its deadline, an admin any run", "not_stuck")

    def force_fail(self, reason: str) -> None:
        self.check_not_terminal("force-fail")
        self._force_failed(reason=reason)

    @event(ForceFailed)
    def _force_failed(self, reason: str) -> None:
        self.state = "failed"


class RunDefaults(Aggregate):
    """A tenant's defaults for its new runs: the deadline a run gets when its request names none."""

    class Opened(Aggregate.Created):
        pass

    class DeadlineSet(Aggregate.Event):
        deadline_s: int | None

    @classmethod
    def open(cls, tenant_id: str) -> "RunDefaults":
        return create(cls, cls.Opened, id=run_defaults_id(tenant_id))

    @event(Opened)
    def __init__(self):
        self.deadline_s: int | None = None

    def set_deadline(self, deadline_s: int | None) -> None:
        self._deadline_set(deadline_s=deadline_s)

    @event(DeadlineSet)
    def _deadline_set(self, deadline_s: int | None) -> None:
        self.deadline_s = deadline_s
