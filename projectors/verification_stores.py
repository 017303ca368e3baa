"""Reading a live read model as of one instant: how far it has applied a tenant's chain, and its rows.

PostgreSQL: one REPEATABLE READ, READ ONLY transaction per (model, tenant) reads the live generation's
name, the tenant's head, hold and partition position, then its rows, all in one snapshot, so the rows
are exactly those of the events up to that head (a projector commits its rows with its head). Rows
are read with a server-side cursor, in key order (text keys in "C" collation: byte order, which is
Python's order of str).

ClickHouse: no transactions. The head and the position are one query over `progress` (written as one
block, so they agree); rows may run ahead of the head (a poll's rows land before its progress), so
rows of later events are optional (checks) or cut off where the key allows (`chain_seq` in the sorting
key), and a problem is confirmed by a second look before it is reported (projectors/verification_job.py).
"""
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from psycopg import AsyncConnection

from infra.adapters.clickhouse import ClickHouse
from infra.adapters.kafka import partition_for
from projectors.generations import PostgresGenerations

PG_BOOKKEEPING = frozenset({"positions", "heads", "status", "held"})
CH_BOOKKEEPING = frozenset({"progress", "status", "held"})
PAGE = 5000


@dataclass(frozen=True)
class Cut:
    """Where a model stands in one tenant's chain."""
    applied: int  # the last chain_seq it applied
    position: int | None  # its next offset in the tenant's partition (None: it has stored none)
    held_at: int | None  # the chain_seq it holds the tenant at, if it does


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    text: frozenset[str]  # columns ordered as text

    def order(self, collate: str = "") -> str:
        return ", ".join(f'{c} COLLATE "C"' if collate and c in self.text else c for c in self.key)

    def key_of(self, row: tuple) -> tuple:
        return tuple(row[self.columns.index(c)] for c in self.key)


class PgSnapshot:
    def __init__(self, conn: AsyncConnection, schema: str):
        self.conn, self.schema = conn, schema

    async def one(self, sql: str, params: tuple) -> tuple | None:
        return await (await self.conn.execute(sql.format(s=self.schema), params)).fetchone()

    async def cut(self, tenant_id: str, partitions: int) -> Cut:
        head = await self.one("SELECT chain_seq FROM {s}.heads WHERE tenant_id = %s", (tenant_id,))
        held = await self.one("SELECT chain_seq FROM {s}.held WHERE tenant_id = %s", (tenant_id,))
        position = await self.one("SELECT next_offset FROM {s}.positions WHERE partition = %s",
                                  (partition_for(tenant_id, partitions),))
        return Cut(head[0] if head else 0, position[0] if position else None, held[0] if held else None)

    async def rows(self, sql: str, params: tuple) -> AsyncIterator[tuple]:
        async with self.conn.cursor(name="verification") as cur:
            cur.itersize = PAGE
            await cur.execute(sql.format(s=self.schema), params)
            async for row in cur:
                yield row


@asynccontextmanager
async def pg_snapshot(pool, prefix: str, name: str) -> AsyncIterator[PgSnapshot | None]:
    """The live generation of a PostgreSQL read model in one read-only snapshot (None: it has none)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        live = await PostgresGenerations(pool, prefix).live_on(conn, name)
        yield PgSnapshot(conn, live[0]) if live else None


async def pg_rows(pool, schema: str, sql: str, params: tuple) -> AsyncIterator[tuple]:
    """Rows of a generation no one else writes (a verification's shadow), with a server-side cursor."""
    async with pool.connection() as conn, conn.transaction():
        async for row in PgSnapshot(conn, schema).rows(sql, params):
            yield row


async def pg_tables(conn: AsyncConnection, schema: str) -> dict[str, Table]:
    """The read model's own tables of a generation (bookkeeping left out), with their columns and primary keys."""
    columns = await (await conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY table_name, ordinal_position", (schema,))).fetchall()
    keys = await (await conn.execute(
        "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
        "JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema "
        "AND k.constraint_name = c.constraint_name WHERE c.table_schema = %s AND c.constraint_type = 'PRIMARY KEY' "
        "ORDER BY k.table_name, k.ordinal_position", (schema,))).fetchall()
    return tables_of([(t, c, kind in ("text", "character varying")) for t, c, kind in columns], keys, PG_BOOKKEEPING)


def tables_of(columns: list[tuple[str, str, bool]], keys: list[tuple[str, str]], bookkeeping) -> dict[str, Table]:
    found: dict[str, Table] = {}
    for table in dict.fromkeys(t for t, _, _ in columns):
        if table in bookkeeping or table.endswith("_probe"):
            continue
        found[table] = Table(table, tuple(c for t, c, _ in columns if t == table),
                             tuple(c for t, c in keys if t == table),
                             frozenset(c for t, c, text in columns if t == table and text))
    return found


def ch_tables(ch: ClickHouse, db: str) -> dict[str, Table]:
    tables = ch.query("SELECT name, sorting_key FROM system.tables WHERE database = {db:String} "
                      "AND engine != 'Null' ORDER BY name", {"db": db})
    columns = ch.query("SELECT table, name, type FROM system.columns WHERE database = {db:String} "
                       "ORDER BY table, position", {"db": db})
    keys = [(t["name"], k.strip()) for t in tables for k in t["sorting_key"].split(",") if k.strip()]
    wanted = {t["name"] for t in tables}
    return tables_of([(c["table"], c["name"], "String" in c["type"]) for c in columns if c["table"] in wanted],
                     keys, CH_BOOKKEEPING)


def ch_cut(ch: ClickHouse, db: str, tenant_id: str, partitions: int) -> Cut:
    partition = partition_for(tenant_id, partitions)
    rows = ch.query(f"SELECT maxIf(chain_seq, tenant_id = {{t:String}}) AS head, "
                    f"countIf(tenant_id = '' AND partition = {{p:UInt32}}) AS positions, "
                    f"maxIf(next_offset, tenant_id = '' AND partition = {{p:UInt32}}) AS position "
                    f"FROM {db}.progress", {"t": tenant_id, "p": partition})
    held = ch.query(f"SELECT argMax(chain_seq, at) AS seq, argMax(state, at) AS state FROM {db}.held "
                    f"WHERE tenant_id = {{t:String}} GROUP BY tenant_id", {"t": tenant_id})
    held_at = held[0]["seq"] if held and held[0]["state"] != "released" else None
    return Cut(rows[0]["head"], rows[0]["position"] if rows[0]["positions"] else None, held_at)


def ch_rows(ch: ClickHouse, db: str, table: Table, tenant_id: str, upto: int | None) -> list[tuple]:
    """A tenant's rows of one table (FINAL), in key order; cut at chain_seq `upto` where it is in the key."""
    cut = " AND chain_seq <= {upto:UInt64}" if upto is not None and "chain_seq" in table.key else ""
    params: dict[str, Any] = {"t": tenant_id, **({"upto": upto} if cut else {})}
    rows = ch.query(f"SELECT {', '.join(table.columns)} FROM {db}.{table.name} FINAL "
                    f"WHERE tenant_id = {{t:String}}{cut} ORDER BY {table.order()}", params)
    return [tuple(r[c] for c in table.columns) for r in rows]
