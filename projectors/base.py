"""What a projection is to the runner that feeds it: positions, chain heads, and an atomic apply."""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from schemas.envelope import GENESIS_HASH

Envelope = dict[str, Any]
# What building or encoding a row from a bad event raises; a store adds its own data errors.
DATA_ERRORS = (LookupError, TypeError, ValueError, AttributeError, OverflowError)


@dataclass(frozen=True)
class Position:
    partition: int
    next_offset: int
    last_recorded_at: str | None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Batch:
    """One partition's share of a poll: its events in log order and the offset after them.

    A tenant's catch-up after a hold writes its events with next_offset None: the partition's
    position, which has already moved past them, stays where it is. `first_offset` is the offset of
    the poll's first record of the partition (a store shared by several processes refuses a batch
    whose records another one has stored meanwhile: PositionMoved).
    """
    partition: int
    envelopes: list[Envelope]
    next_offset: int | None
    first_offset: int | None = None
    # The tenants whose records of this poll were passed over because this writer holds them: a store
    # shared by several processes refuses the batch if one of those holds was released meanwhile (HoldMoved).
    passed_over: frozenset[str] = frozenset()
    # A held tenant's catch-up (next_offset None): what it stands on, which a shared store checks (HoldMoved).
    catch_up: "CatchUp | None" = None


class PositionMoved(Exception):
    """The stored position of a partition is past the poll's first record: another process (which the
    group gave the partition in a rebalance) stored those records first. Nothing was written; read
    again from the stored position."""


class HoldMoved(PositionMoved):
    """A hold this writer relies on was released or changed by another process, or a held tenant's catch-up
    finds its head or its partition's position moved since it began: another process resumed the tenant, or
    stored the partition's records past the catch-up's end. Nothing was written; read the holds and positions
    again."""


@dataclass(frozen=True)
class Hold:
    """A tenant stopped in one read model at the first event it cannot apply; other tenants go on.

    `offset` is that record's place in the partition, `chain_seq` the position it holds (or would
    hold) in the tenant's chain. The tenant's events from there on are not applied until it is
    resumed, which replays them from `offset`.
    """
    tenant_id: str
    partition: int
    offset: int
    chain_seq: int
    reason: str
    held_at: datetime | None = None
    resume_requested: bool = False


@dataclass(frozen=True)
class CatchUp:
    """What one chunk of a held tenant's catch-up stands on, for a shared store to check in its transaction.

    The hold is still the one in the store (partition, offset, chain_seq), the tenant's stored head is still
    `head_seq` (the chunk follows it: no other process replayed these events), and the partition's stored
    position is not past `until`, the offset the replay reads up to (no other process passed over the
    tenant's events beyond it). None: not checked (a caller that does not know where the replay ends).
    """
    hold: Hold
    head_seq: int
    until: int | None = None


class Projection(ABC):
    """A read model fed from `ledger.events`; its position lives with its rows."""

    name: str
    linger_ms: int = 20  # how long the broker may hold a fetch to gather a bigger batch
    # Whether its store lives in this process (an embedded chdb, local files): then every process keeps a
    # whole copy of its own and, with RUNLEDGER_PROJECTOR_REPLICA, reads every partition (projectors/runner.py).
    local: bool = False

    @abstractmethod
    async def open(self) -> "Projection":
        """Bind to the live generation (creating the registry and a first generation if missing); return self."""

    @abstractmethod
    async def positions(self) -> dict[int, Position]:
        """Return the next offset to apply per partition (absent: start at 0)."""

    @abstractmethod
    async def head(self, tenant_id: str) -> tuple[int, str]:
        """Return the last applied (chain_seq, hash) of a tenant, or (0, genesis)."""

    @abstractmethod
    async def apply(self, batches: list[Batch], holds: Sequence[Hold] = (), released: str | None = None) -> None:
        """Write a poll's rows, positions, new holds (and a released hold), all or nothing (or idempotently)."""

    @abstractmethod
    async def probe(self, envelopes: list[Envelope]) -> None:
        """Apply envelopes where nothing is kept (a rolled-back transaction); raise what applying them raises."""

    @abstractmethod
    async def holds(self) -> dict[str, Hold]:
        """Return the tenants held in this generation, by tenant id."""

    @abstractmethod
    async def request_resume(self, tenant_id: str) -> bool:
        """Ask the runner to replay a held tenant; False if the tenant is not held."""

    def deterministic(self, error: Exception) -> bool:
        """Whether error comes from the events themselves (so retrying cannot help) rather than the store."""
        return isinstance(error, DATA_ERRORS)

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
