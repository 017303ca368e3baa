"""Phase 5's load generator: open loop at a fixed rate, latency from each command's scheduled send time.

Sends go at start + k/rate whatever is still outstanding, so a late client does not hide
queueing (no coordinated omission). One client per tenant: a single shared httpx.AsyncClient
with a large pool is not usable as an open-loop generator (after any server hiccup a few hundred
requests queue in its pool, its own CPU use explodes and it never catches up; docs/bench.md).
"""
from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from bench.lib.openloop import open_loop
from bench.write.workload import run_steps


class HttpMix:
    """A run's next command is offered once its previous one was accepted; otherwise a new run starts.
    So every command is valid and the mix settles at ~1/3 of each type."""

    def __init__(self, tenants: list[str]):
        self.tenants = tenants
        self.ready: deque = deque()
        self.n = 0

    def next(self) -> tuple[str, dict[str, Any], str, tuple | None]:
        if self.ready:
            tenant, run_id, step, n = self.ready.popleft()
        else:
            tenant, run_id, step, n = self.tenants[self.n % len(self.tenants)], str(uuid.uuid4()), 0, self.n
            self.n += 1
        follow = (tenant, run_id, step + 1, n) if step < 2 else None
        return tenant, run_steps(run_id, n)[step], f"http-{run_id}-{step}", follow


@dataclass
class Sample:
    kind: str
    sent_at: float
    lag_ms: float        # how late the send was against its schedule
    latency_ms: float    # scheduled send → outcome
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


async def one(clients, mix: HttpMix, scheduled: float, command: tuple) -> Sample:
    tenant, body, key, follow = command
    sent = time.perf_counter()
    try:
        outcome = await clients[tenant].send(body, idempotency_key=key)
        error = None if outcome.accepted else f"{outcome.status_code} {outcome.body.get('code')}"
    except Exception as failure:  # noqa: BLE001 - counted as an error
        error = type(failure).__name__
    if error is None and follow:
        mix.ready.append(follow)
    return Sample(body["type"], sent, (sent - scheduled) * 1000, (time.perf_counter() - scheduled) * 1000, error)


async def drive_open_loop(clients, mix: HttpMix, rate: float, duration: float) -> list[Sample]:
    """Send int(rate × duration) commands at fixed instants; return every outcome."""
    return await open_loop(rate, duration, lambda scheduled: one(clients, mix, scheduled, mix.next()))


def http_client(kind: str, port: int):
    """The load generator's client for one tenant: bench/lib/rawhttp.py (light) or httpx."""
    if kind == "raw":
        from bench.lib.rawhttp import RawHTTPClient
        return RawHTTPClient("127.0.0.1", port)
    import httpx
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0)
