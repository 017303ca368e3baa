"""PostgreSQL adapter: one async connection pool per process (psycopg 3).

A role opens its pool with patience (infra/adapters/backoff.py): a PostgreSQL that is down at start
is waited for, one bounded attempt after another, while the role's health says so. A one-shot command
opens it without: DatabaseUnavailable after `timeout_s`, with what to check.
"""
import logging
import re

import psycopg_pool.pool_async
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from infra.adapters.backoff import Backoff, patiently
from infra.adapters.settings import Settings

log = logging.getLogger("runledger.postgres")
PATIENT_ATTEMPT_S = 2.0  # each attempt's bound when waiting with patience: the backoff paces the attempts


class DatabaseUnavailable(RuntimeError):
    pass


class CappedAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff, capped at MAX_DELAY_S.

    The pool doubles the delay between attempts to replace a lost connection without bound (1, 2, 4,
    8, 16 s … up to its reconnect_timeout, 300 s), and offers no setting for it: a PostgreSQL back after
    5 s was used again only after up to 15 s, after 16 s only after up to 31 s (the chaos test's streams
    resumed 13-36 s after a restart). Capped, a database that returns is used within MAX_DELAY_S."""
    MAX_DELAY_S = 2.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY_S)


psycopg_pool.pool_async.AttemptWithBackoff = CappedAttempt  # the name its pools build their attempts from


def redacted(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


async def open_pool(settings: Settings, max_size: int = 10, timeout_s: float = 30,
                    patience: Backoff | None = None) -> AsyncConnectionPool:
    """Open a pool and wait until it can hand out a connection: within timeout_s, or with patience until it can."""
    if patience is None:
        return await opened(settings, max_size, timeout_s)
    return await patiently("PostgreSQL",
                           lambda: opened(settings, max_size, min(timeout_s, PATIENT_ATTEMPT_S)),
                           (DatabaseUnavailable,), patience, log)


async def opened(settings: Settings, max_size: int, timeout_s: float) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=max_size, open=False,
                               kwargs={"autocommit": False},
                               check=AsyncConnectionPool.check_connection)  # a restarted server: no failed read
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout:
        await pool.close()
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redacted(settings.database_url)} within {timeout_s}s; "
            f"is it running (infra/local/stack.sh up) and is RUNLEDGER_DATABASE_URL right?") from None
    return pool
