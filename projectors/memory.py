"""The in-memory twin of the stores: a projection and its generations registry kept in dicts.

It passes the same contract as the PostgreSQL and ClickHouse projections (tests/projection_contract.py),
so unit tests can stand it in for a real store. A poll is applied to a copy of its generation and
the copy replaces the original only once the whole poll is in it, which is what makes apply
all-or-nothing here, as a transaction does in PostgreSQL.
"""
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Sequence

from projectors.base import Batch, Envelope, Hold, Position
from projectors.generations import Creation, Generational, Generations, Live


@dataclass
class Generation:
    """What one generation holds. Values are replaced, never changed in place, so a copy is cheap."""
    rows: dict[Any, Any] = field(default_factory=dict)
    positions: dict[int, Position] = field(default_factory=dict)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    held: dict[str, Hold] = field(default_factory=dict)
    failure: str | None = None

    def copy(self) -> "Generation":
        return Generation(dict(self.rows), dict(self.positions), dict(self.heads), dict(self.held), self.failure)


class MemoryStore:
    """What a database would hold: the registry of live generations, and every generation by location."""

    def __init__(self):
        self.registry: dict[str, Live] = {}
        self.generations: dict[str, Generation] = {}


class MemoryGenerations(Generations):
    """The registry as a dict; creating a generation makes its empty Generation (there is nothing to run)."""

    def __init__(self, store: MemoryStore, prefix: str):
        super().__init__(prefix)
        self.store = store

    async def live(self, name: str) -> Live | None:
        return self.store.registry.get(self.key(name))

    async def register(self, name: str, creation: Creation) -> Live:
        if self.key(name) not in self.store.registry:
            self.store.registry[self.key(name)] = (await self.create(name, 1, creation), 1)
        return self.store.registry[self.key(name)]

    async def create(self, name: str, generation: int, creation: Creation) -> str:
        location = self.location(name, generation)
        self.store.generations.setdefault(location, Generation())
        return location

    async def drop(self, name: str, generation: int) -> None:
        self.store.generations.pop(self.location(name, generation), None)

    async def swap(self, name: str, location: str, generation: int) -> None:
        self.store.registry[self.key(name)] = (location, generation)


class MemoryProjection(Generational):
    """A read model of one row per event, keyed (tenant_id, chain_seq); subclasses choose the row."""
    name = "memory"
    generations: MemoryGenerations

    def __init__(self, store: MemoryStore, topic_prefix: str, generation: int | None = None):
        super().__init__(MemoryGenerations(store, topic_prefix), generation)
        self.store = store

    @property
    def kept(self) -> Generation:
        return self.store.generations[self.location]

    def creation(self, location: str) -> list[str]:
        return []

    def writer_for(self, generation: int) -> "MemoryProjection":
        return type(self)(self.store, self.prefix, generation)

    def write(self, rows: dict[Any, Any], envelopes: list[Envelope]) -> None:
        """Fold a poll's events into rows."""
        for env in envelopes:
            rows[(env["tenant_id"], env["chain_seq"])] = self.row(env)

    def row(self, env: Envelope) -> Any:
        return env["payload"]

    async def positions(self) -> dict[int, Position]:
        return dict(self.kept.positions)

    async def head(self, tenant_id: str) -> tuple[int, str]:
        return self.kept.heads.get(tenant_id, self.genesis)

    async def apply(self, batches: list[Batch], holds: Sequence[Hold] = (), released: str | None = None) -> None:
        if self.pinned_generation is None:
            self.raise_if_swapped(await self.generations.live(self.name))
        staged = self.kept.copy()
        self.write(staged.rows, [env for batch in batches for env in batch.envelopes])
        keep_bookkeeping(staged, batches, holds, released)
        self.store.generations[self.location] = staged

    async def probe(self, envelopes: list[Envelope]) -> None:
        self.write(self.kept.copy().rows, envelopes)

    async def holds(self) -> dict[str, Hold]:
        return dict(self.kept.held)

    async def request_resume(self, tenant_id: str) -> bool:
        hold = self.kept.held.get(tenant_id)
        if hold is not None:
            self.kept.held[tenant_id] = replace(hold, resume_requested=True)
        return hold is not None

    async def record_failure(self, reason: str | None) -> None:
        self.kept.failure = reason

    async def failure(self) -> str | None:
        return self.kept.failure


def keep_bookkeeping(kept: Generation, batches: list[Batch], holds: Sequence[Hold], released: str | None) -> None:
    """Move each tenant's head to its highest chain_seq, each positioned batch's partition on, and the holds."""
    now = datetime.now(timezone.utc)
    for env in (env for batch in batches for env in batch.envelopes):
        if env["chain_seq"] > kept.heads.get(env["tenant_id"], (0, ""))[0]:
            kept.heads[env["tenant_id"]] = (env["chain_seq"], env["hash"])
    for batch in (b for b in batches if b.next_offset is not None):
        before = kept.positions.get(batch.partition)
        last_at = batch.envelopes[-1]["recorded_at"] if batch.envelopes else None
        if last_at is None and before is not None:
            last_at = before.last_recorded_at  # an empty batch keeps when the partition's last event was
        kept.positions[batch.partition] = Position(batch.partition, batch.next_offset, last_at, now)
    kept.held.update({h.tenant_id: replace(h, held_at=now, resume_requested=False) for h in holds})
    kept.held.pop(released, None)
