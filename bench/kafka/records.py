"""Synthetic records the size of the processor's: a command, an event envelope with CloudEvents headers, a reply."""
from __future__ import annotations

import json
import os
import uuid

TENANT = b"bench-kafka-tenant"


def _padded(body: dict, size: int) -> bytes:
    body["pad"] = ""
    raw = json.dumps(body, separators=(",", ":"))
    body["pad"] = os.urandom(max(0, size - len(raw)) // 2 + 1).hex()[: max(0, size - len(raw))]
    return json.dumps(body, separators=(",", ":")).encode()


def command(n: int) -> bytes:
    """A command envelope of about 450 bytes."""
    return _padded({"command_id": str(uuid.uuid4()), "tenant_id": TENANT.decode(), "type": "RecordCost",
                    "n": n, "body": {"provider": "anthropic", "tokens_in": 1200 + n % 500}}, 450)


EVENT = _padded({"event_id": str(uuid.uuid4()), "tenant_id": TENANT.decode(), "chain_seq": 1, "prev_hash": "0" * 64,
                 "hash": "f" * 64, "type": "cost.recorded", "schema_version": 1}, 1100)
REPLY = _padded({"command_id": str(uuid.uuid4()), "status": "accepted", "events": [{"chain_seq": 1, "hash": "f" * 64}]},
                260)
HEADERS = [("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()),
           ("ce_source", b"/runledger/tenants/" + TENANT), ("ce_type", b"dev.runledger.cost.recorded"),
           ("ce_time", b"2026-12-02T09:00:00.000000Z"), ("ce_subject", b"run/" + str(uuid.uuid4()).encode()),
           ("content-type", b"application/json")]


def sizes_text() -> str:
    headers = sum(len(k) + len(v) for k, v in HEADERS)
    return (f"command {len(command(0))} B; event {len(EVENT)} B + {len(HEADERS)} headers ({headers} B); "
            f"reply {len(REPLY)} B; key {len(TENANT)} B")
