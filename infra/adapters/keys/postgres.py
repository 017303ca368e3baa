"""The data-key store in PostgreSQL: one row per data key, wrapped under the KEK the row names.

    public.runledger_data_keys (the default table name)
    (tenant_id, subject, key_id, wrapped bytea, kek_id, created_at, rewrapped_at)
    PRIMARY KEY (tenant_id, key_id), UNIQUE (tenant_id, subject)

Every statement names the tenant, so one tenant's key ids never answer for another. `key_for` reads,
and if there is no row inserts with ON CONFLICT (tenant_id, subject) DO UPDATE (a no-op) RETURNING:
the conflict check waits for a racing insert to end, so every racer gets the row that committed,
in one statement with no second read, and returns its key only once it has committed. `shred`
is a DELETE. A rotation batch locks its rows FOR UPDATE, rewraps them all, then updates them, in one
transaction; a row another rotator rewrapped meanwhile no longer matches and is passed over.
"""
import re
import uuid
from typing import Iterable, Mapping

from psycopg_pool import AsyncConnectionPool

from infra.adapters.keys.cipher import new_data_key
from infra.adapters.keys.port import DataKey, KeyStore, check_scope, unique_ids

TABLE = "runledger_data_keys"
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
DDL = """
CREATE TABLE IF NOT EXISTS public.{t} (
    tenant_id text NOT NULL,
    subject text NOT NULL,
    key_id text NOT NULL,
    wrapped bytea NOT NULL,
    kek_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    rewrapped_at timestamptz,
    PRIMARY KEY (tenant_id, key_id),
    UNIQUE (tenant_id, subject)
);
CREATE INDEX IF NOT EXISTS {t}_kek_id ON public.{t} (kek_id);
"""


class PostgresKeyStore(KeyStore):
    def __init__(self, pool: AsyncConnectionPool, keks: Mapping[str, bytes], current_kek_id: str,
                 table: str = TABLE):
        super().__init__(keks, current_kek_id)
        if not TABLE_NAME.match(table):
            raise ValueError(f"the key table's name matches {TABLE_NAME.pattern}")
        self.pool = pool
        self.table = f"public.{table}"
        self.table_name = table

    async def open(self) -> "PostgresKeyStore":
        async with self.pool.connection() as conn:
            # Two processes creating the same table at once can collide even with IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            await conn.execute(DDL.format(t=self.table_name))
        return self

    async def key_for(self, tenant_id: str, subject: str) -> tuple[str, bytes]:
        check_scope(tenant_id, subject)
        select = f"SELECT key_id, wrapped, kek_id FROM {self.table} WHERE tenant_id = %s AND subject = %s"
        async with self.pool.connection() as conn:
            row = await (await conn.execute(select, (tenant_id, subject))).fetchone()
            if row is None:
                kek_id, wrapped = self.wrap(new_data_key())
                row = await (await conn.execute(
                    f"INSERT INTO {self.table} (tenant_id, subject, key_id, wrapped, kek_id) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, subject) "
                    "DO UPDATE SET subject = EXCLUDED.subject RETURNING key_id, wrapped, kek_id",
                    (tenant_id, subject, f"dk_{uuid.uuid4().hex}", wrapped, kek_id))).fetchone()
        # returned only after the block committed: nothing is ever sealed under a key that rolled back
        key_id, wrapped, kek_id = row
        return key_id, self.unwrap(kek_id, wrapped)

    async def key_entries(self, tenant_id: str, key_ids: Iterable[str]) -> dict[str, DataKey]:
        check_scope(tenant_id)
        ids = unique_ids(key_ids)
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT key_id, subject, wrapped, kek_id FROM {self.table} WHERE tenant_id = %s AND key_id = ANY(%s)",
                (tenant_id, ids))).fetchall()
        return {key_id: DataKey(subject, self.unwrap(kek_id, wrapped)) for key_id, subject, wrapped, kek_id in rows}

    async def subject_keys(self, tenant_id: str, subject: str) -> list[str]:
        check_scope(tenant_id, subject)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT key_id FROM {self.table} WHERE tenant_id = %s AND subject = %s ORDER BY key_id",
                (tenant_id, subject))).fetchall()
        return [r[0] for r in rows]

    async def shred(self, tenant_id: str, subject: str) -> list[str]:
        check_scope(tenant_id, subject)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"DELETE FROM {self.table} WHERE tenant_id = %s AND subject = %s RETURNING key_id",
                (tenant_id, subject))).fetchall()
        return sorted(r[0] for r in rows)

    async def forget(self, tenant_id: str, key_ids: Iterable[str]) -> list[str]:
        check_scope(tenant_id)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"DELETE FROM {self.table} WHERE tenant_id = %s AND key_id = ANY(%s) RETURNING key_id",
                (tenant_id, unique_ids(key_ids)))).fetchall()
        return sorted(r[0] for r in rows)

    async def rewrap_batch(self, kek_id: str, size: int) -> int:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                f"SELECT tenant_id, key_id, wrapped, kek_id FROM {self.table} WHERE kek_id <> %s "
                "ORDER BY tenant_id, key_id LIMIT %s FOR UPDATE", (kek_id, size))).fetchall()
            # every row of the batch is rewrapped before any is written: a failure rolls the batch back whole
            updates = [(*self.wrap(self.unwrap(old, wrapped), kek_id), tenant_id, key_id)
                       for tenant_id, key_id, wrapped, old in rows]
            if updates:
                update = (f"UPDATE {self.table} SET kek_id = %s, wrapped = %s, rewrapped_at = clock_timestamp() "
                          "WHERE tenant_id = %s AND key_id = %s")
                await conn.cursor().executemany(update, updates)
        return len(updates)

    async def kek_usage(self) -> dict[str, int]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(f"SELECT kek_id, count(*) FROM {self.table} GROUP BY kek_id")).fetchall()
        return {kek_id: count for kek_id, count in rows}
