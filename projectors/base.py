"""What a projection is to the runner that feeds it: positions, chain heads, and an atomic apply."""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.envelope import GENESIS_HASH

Envelope = dict[str, Any]


@dataclass(frozen=True)
class Position:
    partition: int
    next_offset: int
    last_recorded_at: str | None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Batch:
    """One partition's share of a poll: its events in log order and the offset after them."""
    partition: int
    envelopes: list[Envelope]
    next_offset: int


class Projection(ABC):
    """A read model fed from `ledger.events`; its position lives with its rows."""

    name: str
    linger_ms: int = 20  # how long the broker may hold a fetch to gather a bigger batch

    @abstractmethod
    async def positions(self) -> dict[int, Position]:
        """Return the next offset to apply per partition (absent: start at 0)."""

    @abstractmethod
    async def head(self, tenant_id: str) -> tuple[int, str]:
        """Return the last applied (chain_seq, hash) of a tenant, or (0, genesis)."""

    @abstractmethod
    async def apply(self, batches: list[Batch]) -> None:
        """Write the rows of a poll's batches and their new positions, all or nothing (or idempotently)."""

    @abstractmethod
    async def record_failure(self, reason: str | None) -> None:
        """Persist why this projector stopped (None clears it)."""

    @abstractmethod
    async def failure(self) -> str | None:
        """Return why this projector stopped, if it did."""

    @abstractmethod
    async def live_generation(self) -> int:
        """Return the generation queries read now."""

    @abstractmethod
    async def fresh_generation(self, generation: int) -> "Projection":
        """Return a writer pinned to an empty generation (dropping whatever was there)."""

    @abstractmethod
    async def go_live(self) -> None:
        """Make this pinned generation the live one, atomically."""

    genesis = (0, GENESIS_HASH)
