"""The Projection contract on PostgreSQL, and what only PostgreSQL promises: a swap waits for the live poll."""
import asyncio

import pytest

pytest.register_assert_rewrite("tests.projection_contract")

from infra.adapters.postgres import open_pool  # noqa: E402
from projectors.base import Batch  # noqa: E402
from projectors.generations import SchemaSwapped  # noqa: E402
from projectors.pg import PostgresProjection, Statement  # noqa: E402
from tests.projection_contract import A, Crash, ProjectionContract, notes  # noqa: E402
from tests.support import make_settings, wait_until  # noqa: E402


class Notes(PostgresProjection):
    """The contract's read model: one note per event. While `held_open` is set, a poll's write waits on it."""
    name = "notes"
    ddl = ("CREATE TABLE IF NOT EXISTS {s}.notes (tenant_id text NOT NULL, chain_seq bigint NOT NULL, "
           "note text NOT NULL, PRIMARY KEY (tenant_id, chain_seq))")
    fuse: int | None = None
    held_open: asyncio.Event | None = None
    writing_pid: int | None = None

    def statements(self, env: dict) -> list[Statement]:
        return [(f"INSERT INTO {self.schema}.notes VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                 (env["tenant_id"], env["chain_seq"], env["payload"]["note"]))]

    async def write(self, conn, envelopes: list[dict]) -> None:
        if self.held_open is not None:
            self.writing_pid = conn.info.backend_pid
            await self.held_open.wait()
        fuse, self.fuse = self.fuse, None
        await super().write(conn, envelopes if fuse is None else envelopes[:fuse])
        if fuse is not None:
            raise Crash(f"the row write failed after {fuse} rows")


class TestPostgresProjection(ProjectionContract):
    @pytest.fixture(autouse=True)
    async def pool(self, prefix):
        self.pg = await open_pool(make_settings(), max_size=3)
        try:
            yield
        finally:
            await self.drop_deployment(prefix)
            await self.pg.close()

    async def drop_deployment(self, prefix: str) -> None:
        async with self.pg.connection() as conn:
            await conn.execute("DELETE FROM public.runledger_projections WHERE name LIKE %s", (f"{prefix}%",))
            schemas = await (await conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                                (f"{prefix}%",))).fetchall()
            for (schema,) in schemas:
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")

    def projection(self, prefix: str) -> Notes:
        return Notes(self.pg, prefix)

    async def rows(self, projection: Notes) -> list[tuple[str, int, str]]:
        async with self.pg.connection() as conn:
            return await (await conn.execute(f"SELECT tenant_id, chain_seq, note FROM {projection.schema}.notes "
                                             "ORDER BY tenant_id, chain_seq")).fetchall()

    async def blocked_by(self, pid: int) -> int:
        async with self.pg.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                            (pid,))).fetchone()
        return row[0]

    async def test_a_swap_waits_for_the_live_writers_poll_to_commit(self, prefix):
        # Given the live writer in the middle of a poll, its transaction open
        live = await self.writer(prefix)
        target = await live.fresh_generation(2)
        live.held_open = asyncio.Event()
        poll = asyncio.create_task(live.apply([Batch(0, A[:2], 2)]))
        await wait_until(lambda: live.writing_pid, 10, "the poll to start writing")
        # When the rebuilt generation is swapped in
        swap = asyncio.create_task(target.go_live())
        # Then the swap waits on the registry row the poll holds, and the poll lands in generation 1
        await wait_until(lambda: self.blocked_by(live.writing_pid), 10, "the swap to wait for the poll")
        assert (swap.done(), await live.live_generation()) == (False, 1)
        live.held_open.set()
        await asyncio.wait_for(asyncio.gather(poll, swap), 10)
        assert (await live.live_generation(), await self.rows(live)) == (2, notes(A[:2]))
        live.held_open = None
        with pytest.raises(SchemaSwapped):
            await live.apply([Batch(0, A[2:3], 3)])
