"""Client time: when a command says its work happened (`occurred_at`, the agent's clock).

The intake reads it (`read_occurred_at`): an RFC 3339 instant with an offset, written once in the
envelopes' own form (UTC, microseconds), so the value the processor stamps on the chain is the
value the client meant and nothing recomputes it. The processor bounds it (`ClockBounds.check`)
against its own clock when it decides, so the bound is on the chain's time base (`recorded_at`):
no more than the skew ahead of it, no further back than the horizon.
"""
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from domain.errors import InvalidCommand
from schemas.envelope import iso

RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                     r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)  # what ClickHouse DateTime64(6) keeps
LATEST = datetime(2300, 1, 1, tzinfo=timezone.utc)
DEFAULT_SKEW_S = 300.0
DEFAULT_HORIZON_S = 30 * 86400.0


def invalid(problem: str) -> InvalidCommand:
    return InvalidCommand(f"occurred_at: {problem}", "invalid_occurred_at",
                          details=[{"field": "occurred_at", "problem": problem}])


def read_occurred_at(value: Any) -> str:
    """The client's instant in the envelopes' form (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), or InvalidCommand."""
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise invalid("must be an RFC 3339 date-time with an offset, e.g. 2026-05-01T12:00:00.250+02:00")
    try:
        at = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as error:
        raise invalid(f"is not a date-time: {error}") from None
    if not EARLIEST <= at < LATEST:
        raise invalid("must be from 1900-01-01 to 2299-12-31 (UTC)")
    return iso(at)


@dataclass(frozen=True)
class ClockBounds:
    """How far a client's `occurred_at` may be from the processor's clock (RUNLEDGER_CLOCK_SKEW_S,
    RUNLEDGER_CLIENT_TIME_HORIZON_S)."""

    skew_s: float = DEFAULT_SKEW_S
    horizon_s: float = DEFAULT_HORIZON_S

    def check(self, occurred_at: str, now: datetime) -> None:
        at = datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
        ahead = (at - now).total_seconds()
        if ahead > self.skew_s:
            raise InvalidCommand(
                f"occurred_at {occurred_at} is {ahead:.3f} s ahead of runledger's clock ({iso(now)}); at most "
                f"RUNLEDGER_CLOCK_SKEW_S = {self.skew_s:.10g} s ahead is accepted", "occurred_at_in_future")
        if -ahead > self.horizon_s:
            raise InvalidCommand(
                f"occurred_at {occurred_at} is {-ahead:.3f} s before runledger's clock ({iso(now)}); at most "
                f"RUNLEDGER_CLIENT_TIME_HORIZON_S = {self.horizon_s:.10g} s back is accepted", "occurred_at_too_old")
