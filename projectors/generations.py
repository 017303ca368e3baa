"""Read models live in generations (docs/adr/0003): where each one's live generation is, and the flip.

A generation is a PostgreSQL schema or a ClickHouse database named `<prefix>_<name>_g<N>`. A registry
names the live one per read model: `public.runledger_projections` (one row per model) or
`runledger_meta.registry` (a row per swap, latest wins). A rebuild fills generation N+1 while N
keeps serving, then swaps the entry. The live writer re-reads the entry with every poll and stops
(SchemaSwapped) once its generation is no longer live: in PostgreSQL inside the poll's own
transaction, holding the row FOR SHARE, so a swap waits for that poll to commit and no poll can
land in a generation that is no longer live; in ClickHouse, which has no transactions, once before
the poll's inserts (a poll already past the check may land in the old generation, harmlessly).
"""
import asyncio
import re
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Callable, Literal

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra.adapters.clickhouse import ClickHouse
from projectors.base import Projection

Live = tuple[str, int]  # (schema or database, generation number)
Creation = Callable[[str], list[str]]  # the statements that create a read model's tables at a location

PG_REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS public.runledger_projections (
    name text PRIMARY KEY,
    active_schema text NOT NULL,
    generation int NOT NULL,
    swapped_at timestamptz NOT NULL DEFAULT now()
)"""
REGISTRY_LOCK = "runledger:registry"  # the advisory lock around creating public.runledger_projections
META = "runledger_meta"
CH_REGISTRY_DDL = [
    f"CREATE DATABASE IF NOT EXISTS {META}",
    f"CREATE TABLE IF NOT EXISTS {META}.registry (name String, active_db String, generation UInt32, "
    "swapped_at DateTime64(6, 'UTC')) ENGINE = ReplacingMergeTree(swapped_at) ORDER BY name",
]


class SchemaSwapped(Exception):
    """The live generation changed under this writer: it must re-read positions and continue."""


def generation_name(prefix: str, name: str, generation: int) -> str:
    """Return the schema (PostgreSQL) or database (ClickHouse) that holds one generation of a read model."""
    return re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{name}_g{generation}".lower())


class Generations(ABC):
    """The registry of live generations of one deployment (topic prefix), one entry per read model."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def location(self, name: str, generation: int) -> str:
        return generation_name(self.prefix, name, generation)

    @abstractmethod
    async def live(self, name: str) -> Live | None:
        """Return the live generation of a read model, or None if it has none yet."""

    @abstractmethod
    async def register(self, name: str, creation: Creation) -> Live:
        """Create generation 1 and name it live if the model has no live generation; return the live one."""

    @abstractmethod
    async def create(self, name: str, generation: int, creation: Creation) -> str:
        """Create a generation's tables if missing, without naming it live; return its location."""

    @abstractmethod
    async def drop(self, name: str, generation: int) -> None:
        """Drop a generation and everything in it."""

    @abstractmethod
    async def swap(self, name: str, location: str, generation: int) -> None:
        """Name this generation the live one, atomically for readers and the live writer."""


class Generational(Projection):
    """A projection kept in generations: bound to the live one, or pinned to the one a rebuild fills."""

    def __init__(self, generations: Generations, generation: int | None):
        self.generations = generations
        self.prefix = generations.prefix
        self.pinned_generation = generation
        self.location = ""

    @abstractmethod
    def creation(self, location: str) -> list[str]:
        """Return the statements that create this read model's tables (bookkeeping included) at location."""

    @abstractmethod
    def writer_for(self, generation: int) -> "Generational":
        """Return an unopened writer of this read model pinned to generation."""

    async def open(self) -> "Generational":
        live = await self.generations.register(self.name, self.creation)
        if self.pinned_generation is None:
            self.location = live[0]
        else:
            self.location = await self.generations.create(self.name, self.pinned_generation, self.creation)
        return self

    async def follow(self) -> None:
        """Rebind a reader to the live generation: a rebuild in any process may have swapped it since open.

        A pinned writer stays where it is; the live writer learns of a swap by SchemaSwapped instead."""
        if self.pinned_generation is None and (live := await self.generations.live(self.name)) is not None:
            self.location = live[0]

    async def live_generation(self) -> int:
        return (await self.generations.live(self.name))[1]

    async def fresh_generation(self, generation: int) -> "Generational":
        await self.generations.drop(self.name, generation)
        return await self.writer_for(generation).open()

    async def go_live(self) -> None:
        await self.generations.swap(self.name, self.location, self.pinned_generation)

    def raise_if_swapped(self, live: Live | None) -> None:
        """Stop a live writer whose generation the registry no longer names (a pinned one never asks)."""
        if live is None or live[0] != self.location:
            raise SchemaSwapped(self.location)


class PostgresGenerations(Generations):
    """`public.runledger_projections`: one row per read model naming its live schema."""

    def __init__(self, pool: AsyncConnectionPool, prefix: str):
        super().__init__(prefix)
        self.pool = pool

    async def live(self, name: str) -> Live | None:
        async with self.pool.connection() as conn:
            return await self.live_on(conn, name)

    async def live_on(self, conn: AsyncConnection, name: str,
                      lock: Literal["", "FOR SHARE", "FOR UPDATE"] = "") -> Live | None:
        """Read the live generation in conn's transaction; FOR SHARE keeps a swap waiting until it ends."""
        row = await (await conn.execute(
            f"SELECT active_schema, generation FROM public.runledger_projections WHERE name = %s {lock}",
            (self.key(name),))).fetchone()
        return (row[0], row[1]) if row else None

    async def register(self, name: str, creation: Creation) -> Live:
        async with self.pool.connection() as conn:
            # Roles starting at once on a fresh database race on CREATE TABLE IF NOT EXISTS itself (a
            # UniqueViolation on pg_type): one registry-wide lock, held to the end of this transaction, first.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REGISTRY_LOCK,))
            await conn.execute(PG_REGISTRY_DDL)
            await self.serialise(conn, name)
            live = await self.live_on(conn, name)
            if live is None:
                live = (self.location(name, 1), 1)
                await self.execute(conn, creation(live[0]))
                await conn.execute("INSERT INTO public.runledger_projections (name, active_schema, generation) "
                                   "VALUES (%s, %s, %s)", (self.key(name), *live))
        return live

    async def create(self, name: str, generation: int, creation: Creation) -> str:
        location = self.location(name, generation)
        async with self.pool.connection() as conn:
            await self.serialise(conn, name)
            await self.execute(conn, creation(location))
        return location

    async def drop(self, name: str, generation: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.location(name, generation)} CASCADE")

    async def swap(self, name: str, location: str, generation: int) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await self.live_on(conn, name, lock="FOR UPDATE")
            await conn.execute("UPDATE public.runledger_projections SET active_schema = %s, generation = %s, "
                               "swapped_at = now() WHERE name = %s", (location, generation, self.key(name)))

    async def serialise(self, conn: AsyncConnection, name: str) -> None:
        # Two processes creating the same schema at once can collide even with IF NOT EXISTS.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.key(name),))

    @staticmethod
    async def execute(conn: AsyncConnection, statements: list[str]) -> None:
        for statement in statements:
            await conn.execute(statement)


class ClickHouseGenerations(Generations):
    """`runledger_meta.registry`: a row per registration or swap; a model's latest row names its live database."""

    def __init__(self, ch: ClickHouse, prefix: str):
        super().__init__(prefix)
        self.ch = ch

    def live_now(self, name: str) -> Live | None:
        """Return the live generation, blocking: for callers already on a worker thread."""
        rows = self.ch.query(f"SELECT argMax(active_db, swapped_at) AS db, argMax(generation, swapped_at) AS gen, "
                             f"count() AS n FROM {META}.registry WHERE name = {{name:String}}", {"name": self.key(name)})
        return (rows[0]["db"], rows[0]["gen"]) if rows and rows[0]["n"] else None

    async def live(self, name: str) -> Live | None:
        return await asyncio.to_thread(self.live_now, name)

    async def register(self, name: str, creation: Creation) -> Live:
        return await asyncio.to_thread(self._register, name, creation)

    def _register(self, name: str, creation: Creation) -> Live:
        self.execute(CH_REGISTRY_DDL)
        live = self.live_now(name)
        if live is None:
            live = (self.location(name, 1), 1)
            self.execute(creation(live[0]))
            self.record(name, *live)
        return live

    async def create(self, name: str, generation: int, creation: Creation) -> str:
        location = self.location(name, generation)
        await asyncio.to_thread(self.execute, creation(location))
        return location

    async def drop(self, name: str, generation: int) -> None:
        await asyncio.to_thread(self.ch.command, f"DROP DATABASE IF EXISTS {self.location(name, generation)}")

    async def swap(self, name: str, location: str, generation: int) -> None:
        await asyncio.to_thread(self.record, name, location, generation)

    def record(self, name: str, location: str, generation: int) -> None:
        self.ch.insert(f"{META}.registry", ["name", "active_db", "generation", "swapped_at"],
                       [(self.key(name), location, generation, datetime.now(timezone.utc))])

    def execute(self, statements: list[str]) -> None:
        for statement in statements:
            self.ch.command(statement)
