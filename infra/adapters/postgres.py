"""PostgreSQL adapter: one async connection pool per process (psycopg 3)."""
import re

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from infra.adapters.settings import Settings


class DatabaseUnavailable(RuntimeError):
    pass


def redacted(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


async def open_pool(settings: Settings, max_size: int = 10, timeout_s: float = 30) -> AsyncConnectionPool:
    """Open a pool and wait until it can hand out a connection."""
    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=max_size, open=False,
                               kwargs={"autocommit": False})
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout:
        await pool.close()
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redacted(settings.database_url)} within {timeout_s}s; "
            f"is it running (infra/local/stack.sh up) and is RUNLEDGER_DATABASE_URL right?") from None
    return pool
