"""Waiting out a dependency (the broker, PostgreSQL) that is down when a role starts.

A role started before its broker or database used to exit, and only an outside supervisor brought
it back. Now the adapters that connect (infra/adapters/eventlog/kafka.py, infra/adapters/postgres.py)
try again with bounded exponential backoff: each delay doubles up to `cap_s`, so a dependency that
returns is noticed within about `cap_s`; a little jitter keeps many roles from knocking in step.
One line is logged at the first failure and then one per `log_every_s`, however often it tries.
One-shot commands are given no patience: they fail at once with their clear message.
"""
import asyncio
import logging
import random
import time
import weakref
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")
WAITING: "weakref.WeakSet[asyncio.Task]" = weakref.WeakSet()  # tasks between attempts or in a retried one


def waiting_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether some task of the loop is waiting for a dependency (so it may be cancelled at once on stop)."""
    return any(not task.done() and task.get_loop() is loop for task in list(WAITING))


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: first_s, doubling up to cap_s, each shortened by up to `jitter` of itself."""
    first_s: float = 0.2
    cap_s: float = 2.0
    factor: float = 2.0
    jitter: float = 0.2
    log_every_s: float = 30.0

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """The delay after the attempt-th failure (1-based)."""
        base = min(self.cap_s, self.first_s * self.factor ** max(0, attempt - 1))
        return base * (1 - self.jitter * draw())


async def patiently(what: str, attempt: Callable[[], Awaitable[T]], retry_on: tuple[type[BaseException], ...],
                    backoff: Backoff, log: logging.Logger, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    monotonic: Callable[[], float] = time.monotonic) -> T:
    """Run attempt() until it returns, sleeping backoff's delays after each failure it may retry.

    `what`: the dependency waited for ("the broker"), as the log lines name it."""
    started, tries, logged = monotonic(), 0, None
    while True:
        tries += 1
        try:
            result = await attempt()
        except retry_on as error:
            WAITING.add(asyncio.current_task())
            delay, now = backoff.delay(tries), monotonic()
            if logged is None or now - logged >= backoff.log_every_s:
                log.warning("waiting for %s: %s (attempt %s, %.0f s so far, next in %.1f s)",
                            what, error, tries, now - started, delay)
                logged = now
            await sleep(delay)
        else:
            WAITING.discard(asyncio.current_task())
            if tries > 1:
                log.warning("waited for %s: done at attempt %s, after %.1f s", what, tries, monotonic() - started)
            return result
