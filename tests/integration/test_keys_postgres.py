"""The KeyStore contract on PostgreSQL, and what only PostgreSQL shows: the table, racing opens, real deletes."""
import asyncio
import uuid

import pytest

pytest.register_assert_rewrite("tests.keys_contract")

from psycopg_pool import AsyncConnectionPool  # noqa: E402

from infra.adapters.keys.postgres import PostgresKeyStore  # noqa: E402
from tests.keys_contract import OLD, KeyStoreContract, Rows  # noqa: E402
from tests.support import DATABASE_URL  # noqa: E402


class TestPostgresKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    async def table(self):
        self.name = f"keys_contract_{uuid.uuid4().hex[:12]}"
        # every connection open before the test starts, so racing callers really run side by side
        self.pg = AsyncConnectionPool(DATABASE_URL, min_size=10, max_size=10, open=False, kwargs={"autocommit": False})
        await self.pg.open(wait=True, timeout=30)
        try:
            yield
        finally:
            async with self.pg.connection() as conn:
                await conn.execute(f"DROP TABLE IF EXISTS public.{self.name}")
            await self.pg.close()

    async def store(self, keks: dict[str, bytes] = OLD, current: str = "kek-1") -> PostgresKeyStore:
        return await PostgresKeyStore(self.pg, keks, current, table=self.name).open()

    async def rows(self) -> Rows:
        async with self.pg.connection() as conn:
            rows = await (await conn.execute(f"SELECT tenant_id, key_id, subject, kek_id, wrapped "
                                             f"FROM public.{self.name} ORDER BY tenant_id, key_id")).fetchall()
        return {(t, k): (subject, kek_id, bytes(wrapped)) for t, k, subject, kek_id, wrapped in rows}

    async def count(self, where: str = "true", params: tuple = ()) -> int:
        async with self.pg.connection() as conn:
            row = await (await conn.execute(f"SELECT count(*) FROM public.{self.name} WHERE {where}",
                                            params)).fetchone()
        return row[0]

    async def test_racing_opens_create_the_table_once_with_no_flag_for_deleted_rows(self):
        await asyncio.gather(*(self.store() for _ in range(4)))
        async with self.pg.connection() as conn:
            columns = await (await conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s ORDER BY ordinal_position", (self.name,))).fetchall()
        assert columns == [("tenant_id", "text"), ("subject", "text"), ("key_id", "text"), ("wrapped", "bytea"),
                           ("kek_id", "text"), ("created_at", "timestamp with time zone"),
                           ("rewrapped_at", "timestamp with time zone")]

    async def test_a_shred_leaves_no_row_of_the_subject_in_the_table(self):
        store = await self.store()
        ids = [(await store.key_for("a", s))[0] for s in ("alice", "bob")]
        assert (await self.count("subject = %s", ("alice",)), await self.count()) == (1, 2)
        assert await store.shred("a", "alice") == [ids[0]]
        assert (await self.count("subject = %s", ("alice",)), await self.count("key_id = %s", (ids[0],)),
                await self.count()) == (0, 0, 1)

    async def test_rotation_leaves_no_row_under_the_old_kek_and_stamps_each_rewrap(self):
        store = await self.store()
        await self.five_keys(store)
        assert (await self.count("rewrapped_at IS NOT NULL"), await self.count("kek_id = 'kek-1'")) == (0, 5)
        assert await store.rotate_kek(bytes(range(1, 33)), "kek-2", batch_size=3) == 5
        assert (await self.count("rewrapped_at IS NOT NULL"), await self.count("kek_id = 'kek-1'")) == (5, 0)
