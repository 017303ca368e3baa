"""The client side of the chaos test: one lane per tenant, each a run's lifecycle after another, paced to a total rate.

Every command carries an Idempotency-Key and is sent again with it until it has a definite answer:
200 (accepted) or 4xx (rejected). 503, 504 and connection errors mean "send it again", to the other API
process (the client knows both, as behind a load balancer), after a short pause (RETRY_PAUSE_S, not the
Retry-After of 2 s: a tighter client measures the ledger's recovery, not its own back-off). Any other
answer is written down as unexpected and retried too (the key makes the retry exact).
"""
import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field

import httpx

from tests.support import auth

RETRY_PAUSE_S = 0.25


@dataclass
class Answer:
    tenant: str
    key: str
    type: str
    status: int
    body: dict
    sent_at: float      # the attempt that got the answer
    answered_at: float
    attempts: int


@dataclass
class Load:
    urls: list[str]
    tenants: list[str]
    rate: float
    rng: random.Random
    accepted: list[Answer] = field(default_factory=list)
    rejected: list[Answer] = field(default_factory=list)
    unexpected: list[tuple[str, int, str]] = field(default_factory=list)
    retried: dict[str, int] = field(default_factory=dict)  # why → how many times
    stopping: bool = False

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=3), limits=limits) as http:
            await asyncio.gather(*(self.lane(http, t, i) for i, t in enumerate(self.tenants)))

    async def lane(self, http: httpx.AsyncClient, tenant: str, index: int) -> None:
        period = len(self.tenants) / self.rate
        next_at = time.monotonic() + period * index / len(self.tenants)  # lanes spread over a period
        while not self.stopping:
            run, step, approval = str(uuid.uuid4()), str(uuid.uuid4()), None
            for body in lifecycle(run, step):
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not waiting for anything
                next_at = max(next_at + period, time.monotonic())
                if body["type"] == "GrantApproval":
                    body = {**body, "approval_id": approval}
                answer = await self.until_answered(http, tenant, body)
                if answer.status != 200:
                    break  # a rejection ends this run; the lane starts another
                if body["type"] == "RequestApproval":
                    approval = answer.body["aggregate_id"]
                if self.stopping:
                    return

    async def until_answered(self, http: httpx.AsyncClient, tenant: str, body: dict) -> Answer:
        key, attempts = f"chaos-{uuid.uuid4()}", 0
        approver = body["type"] == "GrantApproval"
        who = auth(tenant, "approver", subject="ann") if approver else auth(tenant)
        headers = {**who, "Idempotency-Key": key}
        first = self.rng.randrange(len(self.urls))
        while True:
            url = self.urls[(first + attempts) % len(self.urls)]
            attempts += 1
            sent = time.monotonic()
            try:
                response = await http.post(f"{url}/v1/commands", json=body, headers=headers)
            except httpx.TransportError as error:
                self.count(type(error).__name__)
            else:
                answer = Answer(tenant, key, body["type"], response.status_code, json_of(response), sent,
                                time.monotonic(), attempts)
                if response.status_code == 200:
                    self.accepted.append(answer)
                    return answer
                if 400 <= response.status_code < 500:
                    self.rejected.append(answer)
                    return answer
                if response.status_code in (503, 504):
                    self.count(f"{response.status_code} {answer.body.get('code')}")
                else:
                    self.unexpected.append((key, response.status_code, response.text[:300]))
            await asyncio.sleep(RETRY_PAUSE_S)

    def count(self, why: str) -> None:
        self.retried[why] = self.retried.get(why, 0) + 1

    def all_accepting_since(self, since: float) -> float | None:
        """When every tenant had a command sent at or after `since` accepted (the latest tenant's first), or None."""
        firsts = []
        for tenant in self.tenants:
            times = [a.answered_at for a in self.accepted if a.tenant == tenant and a.sent_at >= since]
            if not times:
                return None
            firsts.append(min(times))
        return max(firsts)


def json_of(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {"unparsed": response.text[:300]}
    return body if isinstance(body, dict) else {"unparsed": response.text[:300]}


def lifecycle(run: str, step: str) -> list[dict]:
    """A run with a step, an approval granted (by another subject) and a cost, completed: every read model sees it."""
    return [{"type": "RequestRun", "agent_id": "chaos", "run_id": run, "project": "chaos"},
            {"type": "StartRun", "run_id": run},
            {"type": "StartStep", "run_id": run, "step_id": step, "kind": "llm", "name": "think"},
            {"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "succeeded"},
            {"type": "RequestApproval", "run_id": run, "action": "deploy", "risk_tier": "low"},
            {"type": "GrantApproval"},
            {"type": "RecordCost", "run_id": run, "provider": "p", "model": "m", "tokens_in": 10, "tokens_out": 5,
             "amount_micros": 7, "currency": "USD"},
            {"type": "CompleteRun", "run_id": run}]
