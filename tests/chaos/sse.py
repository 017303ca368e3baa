"""SSE followers: one per tenant on `/v1/streams/tenant` (every event of the tenant), from the start of the channel.

Whenever the stream breaks (a killed API, PostgreSQL restarting, a stream that ends), the follower
connects again, to the other API process, with `Last-Event-ID` of the last event it got, as a browser
does. It also hangs up by itself now and then (after a random 20 to 200 events), so that a run
has many more seams than faults. Everything it receives is kept (id, chain_seq, when) for the judge; so is every
`replay_incomplete` or `overflow`, which this load should never cause.
"""
import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx

from tests.sse_client import messages
from tests.support import auth

RECONNECT_PAUSE_S = 0.25


@dataclass
class Follower:
    tenant: str
    urls: list[str]
    rng: random.Random = field(default_factory=random.Random)
    received: list[tuple[int, int, float]] = field(default_factory=list)  # (id, chain_seq, monotonic)
    notices: list[tuple[str, str]] = field(default_factory=list)  # replay_incomplete / overflow: (event, data)
    connects: int = 0
    hang_ups: int = 0
    refusals: dict[str, int] = field(default_factory=dict)

    @property
    def last_id(self) -> int:
        return self.received[-1][0] if self.received else 0

    @property
    def last_seq(self) -> int:
        return self.received[-1][1] if self.received else 0

    def seen_at(self, chain_seq: int) -> float | None:
        return next((at for _, seq, at in self.received if seq == chain_seq), None)

    async def follow(self) -> None:
        timeout = httpx.Timeout(5, read=40)  # a ping comes every 15 s
        async with httpx.AsyncClient(timeout=timeout) as http:
            while True:
                url = self.urls[self.connects % len(self.urls)]
                self.connects += 1
                try:
                    await self.once(http, url)
                except (httpx.HTTPError, ValueError) as error:
                    self.refused(type(error).__name__)
                await asyncio.sleep(RECONNECT_PAUSE_S)

    async def once(self, http: httpx.AsyncClient, url: str) -> None:
        resume = {"Last-Event-ID": str(self.last_id)} if self.received else {}
        params = {} if self.received else {"last_event_id": 0}
        async with http.stream("GET", f"{url}/v1/streams/tenant", params=params,
                               headers={**auth(self.tenant), **resume}) as response:
            if response.status_code != 200:
                await response.aread()
                self.refused(f"{response.status_code} {response.text[:80]}")
                return
            budget = self.rng.randint(20, 200)
            async for message in messages(response):
                if message.event in ("replay_incomplete", "overflow"):
                    self.notices.append((message.event, message.data))
                elif message.id is not None and message.data:
                    self.received.append((int(message.id), json.loads(message.data)["chain_seq"], time.monotonic()))
                    budget -= 1
                    if budget == 0:
                        self.hang_ups += 1
                        return

    def refused(self, why: str) -> None:
        self.refusals[why] = self.refusals.get(why, 0) + 1
