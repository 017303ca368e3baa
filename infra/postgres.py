"""PostgreSQL adapter: one async connection pool per process (psycopg 3)."""
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings


async def open_pool(settings: Settings, max_size: int = 10) -> AsyncConnectionPool:
    """Open a pool and wait until it can hand out a connection."""
    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=max_size, open=False,
                               kwargs={"autocommit": False})
    await pool.open(wait=True, timeout=30)
    return pool
