"""After PostgreSQL restarts, the pool hands out no dead connection: the first read after it succeeds.

Without a check on checkout, every connection the pool held before the restart failed its next read
once (`the connection is closed`), so each request that drew one answered an error. On a stack of the
test's own (tests/own_stack.py), since it restarts PostgreSQL.
"""
import pytest

from infra.adapters.postgres import open_pool
from tests.own_stack import running_stack
from tests.support import make_settings

pytestmark = pytest.mark.timeout(240)


async def test_the_first_reads_after_a_postgres_restart_succeed():
    with running_stack("rlpool-") as stack:
        pool = await open_pool(make_settings(database_url=stack.database_url), max_size=4)
        try:
            async with pool.connection() as a, pool.connection() as b, pool.connection() as c:
                pids = {(await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0] for conn in (a, b, c)}
            assert len(pids) == 3 and pool.get_stats()["pool_available"] == 3
            stack.stop_postgres()
            stack.up()  # PostgreSQL again, on the same data; the broker was left running
            answers = []
            for _ in range(3):
                async with pool.connection() as conn:
                    answers.append((await (await conn.execute("SELECT 1")).fetchone())[0])
            assert answers == [1, 1, 1]
        finally:
            await pool.close()
