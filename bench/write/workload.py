"""The write benchmark's command mix: each run's RequestRun → StartRun → RecordCost, tenants round-robin."""
from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from infra.adapters.http.auth import authenticate, mint
from commands.intake import command_envelope
from infra.adapters.settings import Settings

PROJECTS = ("support", "research", "ops")
Command = tuple[str, dict[str, Any], str | None]  # (tenant, body, idempotency key)


def run_steps(run_id: str, n: int) -> list[dict[str, Any]]:
    """The three commands of one run: RequestRun (client-chosen id), StartRun, RecordCost."""
    project = PROJECTS[n % len(PROJECTS)]
    return [
        {"type": "RequestRun", "run_id": run_id, "agent_id": f"agent-{n % 40:02d}",
         "project": project, "labels": {"env": "bench", "team": f"team-{n % 7}"}},
        {"type": "StartRun", "run_id": run_id},
        {"type": "RecordCost", "run_id": run_id, "provider": "anthropic",
         "model": "claude-sonnet-4", "tokens_in": 1200 + n % 500, "tokens_out": 300 + n % 97,
         "amount_micros": 4200 + n % 1000, "currency": "USD"},
    ]


def workload(tenants: list[str], commands: int) -> list[Command]:
    """Commands in log order: tenants round-robin, each run's steps in order within its tenant,
    so every command is valid when it is decided."""
    out: list[Command] = []
    queues: dict[str, deque] = {t: deque() for t in tenants}
    n = 0
    while len(out) < commands:
        for tenant in tenants:
            if not queues[tenant]:
                run_id = str(uuid.uuid4())
                queues[tenant].extend((body, f"bench-{run_id}-{step}" if step == 0 else None)
                                      for step, body in enumerate(run_steps(run_id, n)))
                n += 1
            body, key = queues[tenant].popleft()
            out.append((tenant, body, key))
            if len(out) >= commands:
                break
    return out


def traceparent() -> str:
    """A W3C traceparent, as the API's span writes into every command envelope."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def envelopes(settings: Settings, tenants: list[str], commands: int) -> list[dict[str, Any]]:
    """Command envelopes built exactly as the API builds them (a minted, verified operator principal)."""
    secret = settings.jwt_secret.get_secret_value()
    principals = {t: authenticate(mint(secret, t, f"agent:{t}", ["operator"], settings.jwt_audience),
                                  secret, settings.jwt_audience) for t in tenants}
    return [command_envelope(principals[t], json.dumps(body).encode(), key, traceparent(), None)
            for t, body, key in workload(tenants, commands)]


def serve_env(settings: Settings, workdir: Path, extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a `serve` this benchmark starts: none of the caller's RUNLEDGER_* settings
    leak in, and its chdb data directory lives in the bench's own work directory. An `extra` value
    of None removes that variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
    env.update({
        "RUNLEDGER_CHDB_PATH": str(workdir / "chdb"),
        "RUNLEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RUNLEDGER_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        # checkpoints are signed as in production (a fresh key per run; the bench verifies none)
        "RUNLEDGER_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
        "RUNLEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "RUNLEDGER_PARTITIONS": str(settings.partitions),
        "RUNLEDGER_BATCH_MAX": str(settings.batch_max),
        "RUNLEDGER_PROCESSOR_KAFKA_CLIENT": settings.processor_kafka_client,  # the caller's choice, if it made one
        "PYTHONUNBUFFERED": "1",
    })
    return {k: v for k, v in (env | (extra or {})).items() if v is not None}
