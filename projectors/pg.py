"""Postgres-backed projections: rows, chain heads and position commit in one transaction.

Each projection lives in its own schema, one per generation (projectors/generations.py). The live
writer re-reads the registry inside every transaction (FOR SHARE), so it can never write a poll
into a generation that is no longer live. One transaction holds a whole poll: every partition's
rows, the heads and each partition's position.

A retention sweep (projectors/removals.py) is one of a poll's events like any other: its DELETEs
run in the poll's transaction, each recording in `removals` how many rows it removed, so a probe
(a rolled-back transaction) removes nothing and a poll replayed after a failure records it once.
"""
from typing import Any, Iterable, Sequence

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from projectors.base import DATA_ERRORS, Batch, CatchUp, Envelope, Hold, HoldMoved, Position, PositionMoved
from projectors.generations import Generational, PostgresGenerations
from projectors.removals import Removal, Sweep

Statement = tuple[str, tuple[Any, ...]]

# What each retention sweep removed, per table (projectors/removals.py); a replayed poll adds nothing.
REMOVALS_DDL = """
CREATE TABLE IF NOT EXISTS {s}.removals (
    tenant_id text NOT NULL, chain_seq bigint NOT NULL, record_class text NOT NULL, table_name text NOT NULL,
    rows bigint NOT NULL, swept_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, chain_seq, table_name)
);
"""
BOOKKEEPING_DDL = """
CREATE TABLE IF NOT EXISTS {s}.positions (
    partition int PRIMARY KEY,
    next_offset bigint NOT NULL,
    last_recorded_at text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS {s}.heads (
    tenant_id text PRIMARY KEY,
    chain_seq bigint NOT NULL,
    hash text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.status (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    failure text
);
CREATE TABLE IF NOT EXISTS {s}.held (
    tenant_id text PRIMARY KEY,
    partition int NOT NULL,
    record_offset bigint NOT NULL,
    chain_seq bigint NOT NULL,
    reason text NOT NULL,
    held_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    resume_requested boolean NOT NULL DEFAULT false
);
""" + REMOVALS_DDL


class PostgresProjection(Generational):
    ddl: str = ""
    generations: PostgresGenerations

    def __init__(self, pool: AsyncConnectionPool, topic_prefix: str, generation: int | None = None):
        super().__init__(PostgresGenerations(pool, topic_prefix), generation)
        self.pool = pool

    @property
    def schema(self) -> str:
        return self.location

    @schema.setter
    def schema(self, schema: str) -> None:
        self.location = schema

    def creation(self, schema: str) -> list[str]:
        return [f"CREATE SCHEMA IF NOT EXISTS {schema}", BOOKKEEPING_DDL.format(s=schema), self.ddl.format(s=schema)]

    def writer_for(self, generation: int) -> "PostgresProjection":
        return type(self)(self.pool, self.prefix, generation)

    async def open(self) -> "PostgresProjection":
        await super().open()
        async with self.pool.connection() as conn:  # a generation made before removals existed gets the table
            await self.generations.serialise(conn, self.name)
            await conn.execute(REMOVALS_DDL.format(s=self.schema))
        return self

    # -- the Projection port ------------------------------------------------------------------
    async def positions(self) -> dict[int, Position]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT partition, next_offset, last_recorded_at, updated_at FROM {self.schema}.positions")).fetchall()
        return {p: Position(p, o, at, up) for p, o, at, up in rows}

    async def head(self, tenant_id: str) -> tuple[int, str]:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                f"SELECT chain_seq, hash FROM {self.schema}.heads WHERE tenant_id = %s", (tenant_id,))).fetchone()
        return (row[0], row[1]) if row else self.genesis

    async def apply(self, batches: list[Batch], holds: Sequence[Hold] = (), released: str | None = None) -> None:
        async with self.pool.connection() as conn:
            async with conn.transaction():
                if self.pinned_generation is None:
                    self.raise_if_swapped(await self.generations.live_on(conn, self.name, lock="FOR SHARE"))
                await self.fence(conn, batches)
                await self.write(conn, [env for batch in batches for env in batch.envelopes])
                await self.execute(conn, self.bookkeeping(batches) + self.hold_statements(holds, released))

    async def fence(self, conn: AsyncConnection, batches: list[Batch]) -> None:
        """Refuse a poll whose records another process stored first (PositionMoved, nothing written).

        Processes in one group split the partitions, but in a rebalance the old owner may still be storing
        a poll when the new one has read the position: under a lock per partition, whichever stores second
        finds the position past its first record. A partition with no stored position yet is no exception:
        the second store waits on the lock until the first has committed, and then reads the position the
        first wrote (READ COMMITTED: each statement reads what was committed before it began).

        The same lock covers what the position cannot: a batch that passed over held tenants' records is
        refused if one of those holds is gone (another process released it: the records would be skipped for
        good), and a held tenant's catch-up (which moves no position) is refused unless its hold, its head and
        its partition's position are still what it began from (HoldMoved): so two processes never both replay
        a tenant, and a release never leaves behind records another process passed over meanwhile."""
        firsts = {b.partition: b.first_offset for b in batches
                  if b.next_offset is not None and b.first_offset is not None}
        catch_ups = [b.catch_up for b in batches if b.catch_up is not None]
        passed_over = sorted({t for b in batches for t in b.passed_over})
        for partition in sorted(set(firsts) | {c.hold.partition for c in catch_ups}):
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)",
                               (f"{self.schema}.positions", partition))
        if firsts:
            rows = await (await conn.execute(f"SELECT partition, next_offset FROM {self.schema}.positions "
                                             "WHERE partition = ANY(%s)", (list(firsts),))).fetchall()
            moved = sorted((p, o) for p, o in rows if o > firsts[p])
            if moved:
                raise PositionMoved(f"{self.name}: partitions stored past this poll by another process "
                                    f"(partition, stored position): {moved}")
        if passed_over:
            rows = await (await conn.execute(f"SELECT tenant_id FROM {self.schema}.held WHERE tenant_id = ANY(%s)",
                                             (passed_over,))).fetchall()
            if released := sorted(set(passed_over) - {row[0] for row in rows}):
                raise HoldMoved(f"{self.name}: tenants this poll passed over as held were released by another "
                                f"process: {released}")
        for catch_up in catch_ups:
            await self.fence_catch_up(conn, catch_up)

    async def fence_catch_up(self, conn: AsyncConnection, catch_up: CatchUp) -> None:
        """Lock the hold a catch-up stands on (FOR UPDATE: a second catch-up of the tenant waits here until the
        first commits), then refuse the catch-up if the hold, the tenant's head or the position moved."""
        hold = catch_up.hold
        row = await (await conn.execute(
            f"SELECT partition, record_offset, chain_seq FROM {self.schema}.held WHERE tenant_id = %s FOR UPDATE",
            (hold.tenant_id,))).fetchone()
        if row is None or tuple(row) != (hold.partition, hold.offset, hold.chain_seq):
            now = "released" if row is None else "held at (partition, offset, chain_seq) " + str(tuple(row))
            raise HoldMoved(f"{self.name}: tenant {hold.tenant_id}'s hold at (partition, offset, chain_seq) "
                            f"{(hold.partition, hold.offset, hold.chain_seq)} was changed by another process: "
                            f"it is now {now}")
        head = await (await conn.execute(f"SELECT chain_seq FROM {self.schema}.heads WHERE tenant_id = %s",
                                         (hold.tenant_id,))).fetchone()
        if (head[0] if head else 0) != catch_up.head_seq:
            raise HoldMoved(f"{self.name}: tenant {hold.tenant_id}'s head moved to chain_seq "
                            f"{head[0] if head else 0} since this catch-up read {catch_up.head_seq}: another "
                            "process is replaying it")
        if catch_up.until is not None:
            position = await (await conn.execute(
                f"SELECT next_offset FROM {self.schema}.positions WHERE partition = %s", (hold.partition,))).fetchone()
            if position is not None and position[0] > catch_up.until:
                raise HoldMoved(f"{self.name}: partition {hold.partition} was stored up to {position[0]} by another "
                                f"process, past offset {catch_up.until} where tenant {hold.tenant_id}'s catch-up ends")

    async def probe(self, envelopes: list[Envelope]) -> None:
        async with self.pool.connection() as conn:
            async with conn.transaction(force_rollback=True):
                await self.write(conn, envelopes)

    def deterministic(self, error: Exception) -> bool:
        # Class 22 (data exception: NUL in text, a value out of range) and 23 (a constraint) come
        # from the rows; a connection, a missing table or a lock timeout is the store's, for everyone.
        return isinstance(error, DATA_ERRORS + (psycopg.DataError, psycopg.IntegrityError))

    def hold_statements(self, holds: Sequence[Hold], released: str | None) -> list[Statement]:
        statements = [(f"INSERT INTO {self.schema}.held (tenant_id, partition, record_offset, chain_seq, reason) "
                       "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET partition = excluded.partition, "
                       "record_offset = excluded.record_offset, chain_seq = excluded.chain_seq, reason = excluded.reason, "
                       "held_at = clock_timestamp(), resume_requested = false",
                       (h.tenant_id, h.partition, h.offset, h.chain_seq, h.reason)) for h in holds]
        if released is not None:
            statements.append((f"DELETE FROM {self.schema}.held WHERE tenant_id = %s", (released,)))
        return statements

    async def holds(self) -> dict[str, Hold]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT tenant_id, partition, record_offset, chain_seq, reason, held_at, resume_requested "
                f"FROM {self.schema}.held")).fetchall()
        return {row[0]: Hold(*row) for row in rows}

    async def request_resume(self, tenant_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"UPDATE {self.schema}.held SET resume_requested = true WHERE tenant_id = %s",
                                     (tenant_id,))
            return cur.rowcount == 1

    async def write(self, conn: AsyncConnection, envelopes: list[Envelope]) -> None:
        """Write a poll's rows inside its transaction."""
        await self.execute(conn, [s for env in envelopes for s in self.statements(env)])

    def bookkeeping(self, batches: list[Batch]) -> list[Statement]:
        last_by_tenant = {env["tenant_id"]: env for batch in batches for env in batch.envelopes}
        heads = [(f"INSERT INTO {self.schema}.heads VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE "
                  "SET chain_seq = excluded.chain_seq, hash = excluded.hash",
                  (t, env["chain_seq"], env["hash"])) for t, env in last_by_tenant.items()]
        return heads + [(
            f"INSERT INTO {self.schema}.positions (partition, next_offset, last_recorded_at) "
            "VALUES (%s, %s, %s) ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset, "
            f"last_recorded_at = COALESCE(excluded.last_recorded_at, {self.schema}.positions.last_recorded_at), "
            "updated_at = clock_timestamp()",
            (b.partition, b.next_offset, b.envelopes[-1]["recorded_at"] if b.envelopes else None))
            for b in batches if b.next_offset is not None]

    @staticmethod
    async def execute(conn: AsyncConnection, statements: Iterable[Statement]) -> None:
        async with conn.pipeline(), conn.cursor() as cur:
            for sql, params in statements:
                await cur.execute(sql, params)

    async def record_failure(self, reason: str | None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(f"INSERT INTO {self.schema}.status (id, failure) VALUES (1, %s) "
                               "ON CONFLICT (id) DO UPDATE SET failure = excluded.failure", (reason,))

    async def failure(self) -> str | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(f"SELECT failure FROM {self.schema}.status")).fetchone()
        return row[0] if row else None

    def removal(self, sweep: Sweep, table: str, delete: str, params: tuple[Any, ...]) -> Statement:
        """Delete a sweep's rows from one table (`delete` has no RETURNING) and record how many, in one statement."""
        return (f"WITH gone AS ({delete} RETURNING 1) INSERT INTO {self.schema}.removals "
                "SELECT %s, %s, %s, %s, count(*), %s FROM gone ON CONFLICT DO NOTHING",
                (*params, sweep.tenant_id, sweep.chain_seq, sweep.record_class, table, sweep.swept_at))

    async def removals(self, tenant_id: str) -> list[Removal]:
        """What retention sweeps removed from this read model for a tenant, sweep by sweep, table by table."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT tenant_id, chain_seq, record_class, table_name, rows, swept_at FROM {self.schema}.removals "
                "WHERE tenant_id = %s ORDER BY chain_seq, table_name", (tenant_id,))).fetchall()
        return [Removal(*row) for row in rows]

    def statements(self, env: Envelope) -> list[Statement]:
        """Return the SQL that folds one event into this read model (none for events it ignores)."""
        raise NotImplementedError
