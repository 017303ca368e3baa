"""How the roles of `serve` wait out a dependency that is down when they start, and still stop on SIGTERM.

The adapters do the waiting (infra/adapters/backoff.py): a role's event log and pools are built with
PATIENCE. What is left here is stopping: a role waiting for its broker does not see its stop event,
so it is cancelled at once when a task of its loop is waiting (a wait is safe to cancel: it holds
nothing but the attempt in flight), and else after a grace to return by itself. While the broker is
down, aiokafka logs an error per connection attempt of every client; `Quieter` lets one through per
address and 30 s, so the log is not flooded by the waiting itself.
"""
import asyncio
import logging
import time
from typing import Awaitable, Callable, TypeVar

import psycopg

from infra.adapters.backoff import Backoff, patiently, waiting_on

T = TypeVar("T")
log = logging.getLogger("runledger.serve")
PATIENCE = Backoff(first_s=0.2, cap_s=2.0)  # a dependency that returns is seen within about 2 s
STOP_GRACE_S = 10.0
POSTGRES_DOWN = (psycopg.OperationalError,)  # a refused or dropped connection, a pool that timed out (PoolTimeout)


async def with_postgres(attempt: Callable[[], Awaitable[T]]) -> T:
    """attempt(), again with PATIENCE while PostgreSQL is down: the pool opened, then the database went away
    before the tables were set up. The attempt must be safe to repeat from the start (each `open()` is)."""
    return await patiently("PostgreSQL", attempt, POSTGRES_DOWN, PATIENCE, log)


async def until_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """The result of work, or None (work cancelled) if stop is set first."""
    task, stopping = asyncio.ensure_future(work), asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()


def stoppable(role: Callable[[asyncio.Event], Awaitable[None]], grace_s: float = STOP_GRACE_S
              ) -> Callable[[asyncio.Event], Awaitable[None]]:
    """role, cancelled if it has not returned within grace_s of its stop (it may be waiting for a dependency)."""
    async def run(stop: asyncio.Event) -> None:
        task = asyncio.ensure_future(role(stop))
        if await until_stopped(stop, asyncio.shield(task)) is None and not task.done():
            waiting = waiting_on(asyncio.get_running_loop())
            done, _ = await asyncio.wait({task}, timeout=0 if waiting else grace_s)
            if not done:
                log.warning("a role %s: cancelled", "waiting for a dependency" if waiting
                            else f"not stopped within {grace_s}s of its stop")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
        await task
    return run


class Quieter(logging.Filter):
    """Let one record of each (template, arguments but the error) through per `every_s`."""

    def __init__(self, templates: tuple[str, ...], every_s: float = 30.0, monotonic=time.monotonic):
        super().__init__()
        self.templates, self.every_s, self.monotonic = templates, every_s, monotonic
        self.last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in self.templates:
            return True
        key, now = (record.msg, repr(record.args[:-1]) if isinstance(record.args, tuple) else ""), self.monotonic()
        if now - self.last.get(key, -self.every_s) < self.every_s:
            return False
        self.last[key] = now
        return True


AIOKAFKA_CONNECT_ERRORS = ('Unable connect to "%s:%s": %s', "Unable connect to node with id %s: %s")


def quiet_connect_errors() -> None:
    kafka_log = logging.getLogger("aiokafka")
    if not any(isinstance(f, Quieter) for f in kafka_log.filters):
        kafka_log.addFilter(Quieter(AIOKAFKA_CONNECT_ERRORS))
