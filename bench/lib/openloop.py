"""The one open-loop load generator: a send at each fixed instant start + k/rate, whatever is still outstanding.

A late reply never delays the next send, so queueing in the server shows in the latencies, which
each caller measures from the scheduled instant it is handed (no coordinated omission).
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


async def open_loop(rate: float, duration: float, send: Callable[[float], Awaitable[T]]) -> list[T]:
    """Call send(scheduled) at int(rate × duration) fixed instants (perf_counter); return every result in order."""
    tasks = []
    start = time.perf_counter() + 0.05
    for k in range(int(rate * duration)):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(scheduled)))
    return list(await asyncio.gather(*tasks))
