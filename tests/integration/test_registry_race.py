"""Roles starting at once on a fresh database: every projection registers, none fails on the registry's own DDL.

Five roles started together used to race on `CREATE TABLE IF NOT EXISTS public.runledger_projections` (a
UniqueViolation on pg_type: IF NOT EXISTS does not serialise concurrent creators); registering now takes a
registry-wide advisory lock first. A throwaway database per run makes the registry table new each time.
"""
import asyncio
import uuid

import psycopg
import pytest

from infra.adapters.postgres import open_pool
from infra.entry.bootstrap import POSTGRES_PROJECTIONS
from tests.support import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_database():
    settings = make_settings()
    name = f"race_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield settings.model_copy(update={"database_url": settings.database_url.rsplit("/", 1)[0] + f"/{name}"})
    finally:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as admin:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("attempt", range(3))
async def test_every_role_registers_its_projections_at_once_on_a_fresh_database(fresh_database, attempt):
    pools = [await open_pool(fresh_database, max_size=len(POSTGRES_PROJECTIONS)) for _ in range(4)]  # four "roles"
    try:
        opened = await asyncio.gather(*(cls(pool, fresh_database.topic_prefix).open()
                                        for pool in pools for cls in POSTGRES_PROJECTIONS), return_exceptions=True)
        assert [type(p).__name__ for p in opened] == [cls.__name__ for _ in pools for cls in POSTGRES_PROJECTIONS]
        async with pools[0].connection() as conn:
            rows = await (await conn.execute("SELECT name, generation FROM public.runledger_projections "
                                             "ORDER BY name")).fetchall()
        assert rows == sorted((f"{fresh_database.topic_prefix}:{cls.name}", 1) for cls in POSTGRES_PROJECTIONS)
    finally:
        for pool in pools:
            await pool.close()
