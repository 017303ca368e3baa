"""The event envelope and the hash rule every chain follows.

hash = lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the whole envelope
without its `hash` field; `prev_hash` of a tenant's first event is 64 zeros.
"""
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

GENESIS_HASH = "0" * 64
ENVELOPE_VERSION = 1


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    subject: str
    roles: list[str]


class Envelope(BaseModel):
    """One event on `ledger.events`: the Kafka record value is this object as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: str = Field(description="UUIDv7")
    tenant_id: str
    chain_seq: int = Field(ge=1, description="gapless per tenant, from 1")
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    type: str
    schema_version: int = Field(ge=1)
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int = Field(ge=1)
    occurred_at: str
    recorded_at: str
    actor: Actor
    command_id: str | None
    causation_id: str | None
    correlation_id: str | None
    traceparent: str | None
    payload: dict[str, Any]


def canonical(envelope: dict[str, Any]) -> bytes:
    """Return the RFC 8785 canonical JSON of the envelope without its hash field."""
    return rfc8785.dumps({k: v for k, v in envelope.items() if k != "hash"})


def compute_hash(envelope: dict[str, Any]) -> str:
    """Return the chain hash of an envelope (its `hash` field, if any, is ignored)."""
    return hashlib.sha256(canonical(envelope)).hexdigest()


def seal(unsealed: dict[str, Any]) -> dict[str, Any]:
    """Return the envelope with its hash added."""
    return {**unsealed, "hash": compute_hash(unsealed)}


def encode(envelope: dict[str, Any]) -> bytes:
    """Return the Kafka record value for an envelope."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def decode(value: bytes) -> dict[str, Any]:
    return json.loads(value)


def iso(at: datetime) -> str:
    """Format a time as RFC 3339 UTC with microseconds, the only form envelopes use."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def cloudevents_headers(envelope: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Return CloudEvents 1.0 Kafka binary-mode headers for an envelope."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", envelope["event_id"].encode()),
        ("ce_source", f"/runledger/tenants/{envelope['tenant_id']}".encode()),
        ("ce_type", f"dev.runledger.{envelope['type']}".encode()),
        ("ce_time", envelope["recorded_at"].encode()),
        ("ce_subject", f"{envelope['aggregate_type']}/{envelope['aggregate_id']}".encode()),
        ("content-type", b"application/json"),
    ]
    if envelope.get("traceparent"):
        headers.append(("traceparent", envelope["traceparent"].encode()))
    return headers
