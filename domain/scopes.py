"""Scopes: what a legal hold keeps and what an evidence bundle holds (parts of commands)."""
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from domain.fields import Command, Id, Instant, Name


class TenantScope(Command):
    kind: Literal["tenant"]


class RunScope(Command):
    kind: Literal["run"]
    run_id: Id


class SubjectScope(Command):
    kind: Literal["subject"]
    subject: Name


class AggregateScope(Command):
    kind: Literal["aggregate"]
    aggregate_id: Id


class TimeRangeScope(Command):
    """Records recorded at or after `start` and before `end`."""
    kind: Literal["time_range"]
    start: Instant
    end: Instant

    @model_validator(mode="after")
    def ordered(self) -> "TimeRangeScope":
        if self.end <= self.start:
            raise ValueError(f"the time range is reversed or empty: end {self.end.isoformat()} is not "
                             f"after start {self.start.isoformat()}")
        return self


HoldScope = Annotated[Union[TenantScope, RunScope, SubjectScope, AggregateScope, TimeRangeScope],
                      Field(discriminator="kind")]


class QueryFilters(Command):
    """A discovery query's filters (queries/discovery.py FILTERS): each event's audit row must equal every one given."""
    actor: Name | None = None
    type: Name | None = None
    run_id: Id | None = None
    tool: Name | None = None
    decision: Name | None = None
    aggregate_id: Id | None = None
    tool_call_id: Id | None = None
    approval_id: Id | None = None


class ExportScope(Command):
    """What an evidence bundle holds: the whole tenant, a run's family, one approval, an actor's events, a time
    range, or a discovery query's results (`query`: its filters, and `start`/`end` as its recorded_at window)."""
    kind: Literal["tenant", "run", "approval", "actor", "time_range", "query"]
    id: Id | None = None
    subject: Name | None = None
    start: Instant | None = None
    end: Instant | None = None
    query: QueryFilters | None = None

    @model_validator(mode="after")
    def complete(self) -> "ExportScope":
        needs = {"run": ("id",), "approval": ("id",), "actor": ("subject",), "time_range": ("start", "end"),
                 "query": ("query",)}
        missing = [f for f in needs.get(self.kind, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} scope needs {', '.join(missing)}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("the time range is reversed or empty: end is not after start")
        if self.kind == "query" and not (self.query.model_dump(exclude_none=True) or self.start or self.end):
            raise ValueError("a query scope needs at least one filter or a time bound")
        return self
