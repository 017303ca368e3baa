"""A small HTTP client for the command API (used by the demo, the tests and the benchmarks)."""
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Outcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool

    @property
    def accepted(self) -> bool:
        return self.status_code == 200 and self.body.get("status") == "accepted"

    @property
    def id(self) -> str:
        return self.body["aggregate_id"]


class LedgerClient:
    def __init__(self, http: httpx.AsyncClient, token: str):
        self.http = http
        self.token = token

    async def send(self, command: dict[str, Any], idempotency_key: str | None = None,
                   expected_version: int | None = None) -> Outcome:
        headers = {"Authorization": f"Bearer {self.token}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        body = dict(command)
        if expected_version is not None:
            body["expected_version"] = expected_version
        response = await self.http.post("/v1/commands", json=body, headers=headers)
        return Outcome(response.status_code, response.json(),
                       response.headers.get("idempotent-replayed") == "true")
