from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import BudgetExceeded
from domain.events import create, event

PERIODS = ("day", "month", "total")


@lru_cache(maxsize=4096)  # a pure function of its names, looked up several times per command
def budget_id(tenant_id: str, project: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"runledger:budget:{tenant_id}:{project}")


def period_prefix(period: str, at_iso: str) -> str:
    """The prefix shared by the ISO dates of every day in the period containing at_iso."""
    return {"day": at_iso[:10], "month": at_iso[:7], "total": ""}[period]


def check_run_cap(run_id: str | None, run_cap: int | None, used: int, amount: int) -> None:
    if run_cap is not None and used + amount > run_cap:
        raise BudgetExceeded(f"cost of {amount} would take run {run_id} over its budget "
                             f"({used} of {run_cap} micro-units used)")


class Budget(Aggregate):
    """A project's spending: an optional limit per period and every cost entry charged to it."""

    class Opened(Aggregate.Created):
        project: str

    class LimitSet(Aggregate.Event):
        period: str
        limit_micros: int
        currency: str

    class CostRecorded(Aggregate.Event):
        cost_id: str
        run_id: str | None
        provider: str
        model: str
        tokens_in: int
        tokens_out: int
        amount_micros: int
        currency: str
        day: str

    @classmethod
    def open(cls, tenant_id: str, project: str) -> "Budget":
        return create(cls, cls.Opened, id=budget_id(tenant_id, project), project=project)

    @event(Opened)
    def __init__(self, project: str):
        self.project = project
        self.period: str | None = None
        self.limit_micros: int | None = None
        self.currency: str | None = None
        self.spent_by_day: dict[str, int] = {}
        self.spent_by_run: dict[str, int] = {}

    def spent(self, at_iso: str) -> int:
        prefix = period_prefix(self.period or "total", at_iso)
        return sum(v for day, v in self.spent_by_day.items() if day.startswith(prefix))

    def check_room_for_run(self, at_iso: str) -> None:
        if self.limit_micros is not None and self.spent(at_iso) >= self.limit_micros:
            raise BudgetExceeded(f"project {self.project!r} has used its {self.period} budget "
                                 f"({self.spent(at_iso)} of {self.limit_micros} micro-"
                                 f"{self.currency}); no new run may start")

    def check_room_for(self, amount: int, currency: str, run_id: str | None,
                       run_cap: int | None, at_iso: str) -> None:
        if self.currency is not None and currency != self.currency:
            raise BudgetExceeded(f"cost in {currency} cannot be charged to a budget kept in "
                                 f"{self.currency}", "currency_mismatch")
        if self.limit_micros is not None and self.spent(at_iso) + amount > self.limit_micros:
            raise BudgetExceeded(f"cost of {amount} would take project {self.project!r} over "
                                 f"its {self.period} budget ({self.spent(at_iso)} of "
                                 f"{self.limit_micros} micro-{self.currency} used)")
        check_run_cap(run_id, run_cap, self.spent_by_run.get(run_id or "", 0), amount)

    @event(LimitSet)
    def set_limit(self, period: str, limit_micros: int, currency: str) -> None:
        self.period = period
        self.limit_micros = limit_micros
        self.currency = currency

    def record_cost(self, cost_id: str, run_id: str | None, provider: str, model: str,
                    tokens_in: int, tokens_out: int, amount_micros: int, currency: str,
                    run_cap: int | None, at_iso: str) -> None:
        self.check_room_for(amount_micros, currency, run_id, run_cap, at_iso)
        self._cost_recorded(cost_id=cost_id, run_id=run_id, provider=provider, model=model,
                            tokens_in=tokens_in, tokens_out=tokens_out,
                            amount_micros=amount_micros, currency=currency,
                            day=at_iso[:10])

    @event(CostRecorded)
    def _cost_recorded(self, cost_id: str, run_id: str | None, provider: str, model: str,
                       tokens_in: int, tokens_out: int, amount_micros: int, currency: str,
                       day: str) -> None:
        self.spent_by_day[day] = self.spent_by_day.get(day, 0) + amount_micros
        if run_id:
            self.spent_by_run[run_id] = self.spent_by_run.get(run_id, 0) + amount_micros
