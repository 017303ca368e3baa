"""The benchmark's HTTP calls to the API: commands until accepted, and the channels read model's progress."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any


class Commands:
    """POST /v1/commands with an Idempotency-Key; retries (same key) counted, as the API documents."""

    def __init__(self, http, servers):
        self.http, self.servers = http, servers
        self.retries: list[str] = []

    async def send(self, token: str, body: dict, deadline_s: float = 900.0) -> dict:
        """Return the accepted outcome; 503/504 or a timeout means: ask again with the same key."""
        import httpx
        key = f"bench-{uuid.uuid4()}"
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                response = await self.http.post("/v1/commands", json=body, headers=headers)
                payload = response.json()
                if response.status_code == 200 and payload.get("status") == "accepted":
                    return payload
                if response.status_code not in (503, 504):
                    raise RuntimeError(f"command refused: {response.status_code} {payload}")
                problem = f"{response.status_code} {payload.get('code')}"
            except httpx.TimeoutException as error:
                problem = repr(error)
            if time.monotonic() > give_up:
                raise RuntimeError(f"no outcome for command {key} within {deadline_s:.0f}s (last: {problem})")
            self.retries.append(problem)
            await asyncio.sleep(1.0)

    async def first(self, token: str, timeout: float) -> dict:
        """Send a RequestRun until it is accepted (the processor owns its partitions by then)."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.servers.check()
            try:
                response = await self.http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "bench"},
                                                headers={"Authorization": f"Bearer {token}"})
                if response.status_code == 200 and response.json().get("status") == "accepted":
                    return response.json()
                last = (response.status_code, response.text[:300])
            except Exception as error:  # noqa: BLE001 - not listening yet
                last = repr(error)
            await asyncio.sleep(0.5)
        raise RuntimeError(f"no command accepted within {timeout}s (last answer: {last})")


async def caught_up(http, token: str, min_seq: int) -> tuple[bool, Any]:
    """Has the channels read model applied the tenant's chain up to min_seq? (200 once it has, 503 before)."""
    async with http.stream("GET", "/v1/streams/tenant", params={"min_seq": min_seq, "wait_ms": 0},
                           headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status_code == 200:
            return True, min_seq
        body = json.loads(await response.aread() or b"{}")
        if response.status_code != 503:
            raise RuntimeError(f"unexpected answer {response.status_code}: {body}")
        return False, (body.get("details") or {}).get("applied_seq", body.get("applied_seq"))


async def wait_caught_up(servers, http, token: str, min_seq: int, timeout: float, what: str, log) -> float:
    started = last_log = time.monotonic()
    while True:
        servers.check()
        ok, applied = await caught_up(http, token, min_seq)
        if ok:
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > timeout:
            raise RuntimeError(f"{what}: channels read model at {applied}, not {min_seq}, after {timeout}s")
        if now - last_log > 10:
            log(f"{what}: channels read model at chain_seq {applied} of {min_seq}")
            last_log = now
        await asyncio.sleep(0.2)
