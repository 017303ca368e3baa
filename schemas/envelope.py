"""The event envelope and the hash rule every chain follows.

hash = lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the whole envelope
without its `hash` field; `prev_hash` of a tenant's first event is 64 zeros.
"""
import hashlib
import json
from datetime import datetime, timezone
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, Callable

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
    idempotency_key: str | None = Field(
        default=None, description="the Idempotency-Key of the command that appended the event; the field "
                                  "is present only when the command carried one, so events without a key "
                                  "hash exactly as before the field existed")
    payload: dict[str, Any]


SAFE_INT = 2**53 - 1


class Sealed(dict):
    """A sealed envelope that remembers its Kafka record value, so it is serialised only once.

    `summary`, where set (schemas/sealing.py), is the JSON of its summary in a reply (`domain.ledger.summary`).
    """

    __slots__ = ("record", "summary")


class Reply(dict):
    """A command's reply that remembers its record value (`encode_json`'s bytes for it); never changed once built."""

    __slots__ = ("record",)


class Plain(dict):
    """An envelope decoded from JSON that holds no float and no integer beyond ±(2^53−1).

    For such content RFC 8785 is json.dumps with sorted keys (see `canonical`), so hashing it
    needs no walk of the tree to find out; the decoder learnt that while parsing.
    """

    __slots__ = ()


class _NotPlain(ValueError):
    pass


def _refuse(text: str) -> Any:
    raise _NotPlain(text)


def _safe_int(text: str) -> int:
    value = int(text)
    if not -SAFE_INT <= value <= SAFE_INT:
        raise _NotPlain(text)
    return value


_PLAIN_JSON = json.JSONDecoder(parse_float=_refuse, parse_int=_safe_int, parse_constant=_refuse)


def needs_full_jcs(value: Any) -> bool:
    """True if value holds a float or an integer beyond ±(2^53−1), where RFC 8785 and json differ.

    Iterative, with exact-type checks first: it runs on every envelope the processor seals.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, float) or (isinstance(item, int) and not -SAFE_INT <= item <= SAFE_INT):
            return True
    return False


def canonical(envelope: dict[str, Any]) -> bytes:
    """Return the RFC 8785 canonical JSON of the envelope without its hash field.

    For ASCII text, integers within ±(2^53−1), strings, booleans and null, RFC 8785 is exactly
    json.dumps with sorted keys and no whitespace (same escapes, same key order), which is
    several times faster than the general implementation; anything else takes the general path.
    A Plain envelope is known to hold no float or unsafe integer, so only its text is checked.
    """
    body = {k: v for k, v in envelope.items() if k != "hash"}
    if isinstance(envelope, Plain) or not needs_full_jcs(body):
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if text.isascii():
            return text.encode()
    return rfc8785.dumps(body)


def compute_hash(envelope: dict[str, Any]) -> str:
    """Return the chain hash of an envelope (its `hash` field, if any, is ignored)."""
    return hashlib.sha256(canonical(envelope)).hexdigest()


def seal(unsealed: dict[str, Any]) -> Sealed:
    """Return the envelope with its hash added (and its record value, built from the same bytes)."""
    body = canonical(unsealed)
    digest = hashlib.sha256(body).hexdigest()
    sealed = Sealed(unsealed, hash=digest)
    sealed.record = body[:-1] + b',"hash":"' + digest.encode() + b'"}'
    return sealed


def compact_json(sort_keys: bool = False) -> Callable[[Any], str]:
    """Return json.dumps(·, separators=(",", ":"), ensure_ascii=False, sort_keys=…) as one encoder built once.

    json.dumps builds a new encoder on every call, which for the small objects the processor writes
    costs as much as the encoding. Same text; only a circular value fails differently (RecursionError).
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys, check_circular=False)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return encoder.encode
    encode_with = c_make_encoder(None, encoder.default, encode_basestring, None, ":", ",", sort_keys, False, True)
    return lambda value: "".join(encode_with(value, 0))


def compact_chunks(sort_keys: bool = False) -> Callable[[Any, int], list[str]] | None:
    """The C encoder `compact_json` joins the chunks of (None without the C accelerator)."""
    if c_make_encoder is None:
        return None
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys, check_circular=False)
    return c_make_encoder(None, encoder.default, encode_basestring, None, ":", ",", sort_keys, False, True)


_COMPACT = compact_json()


def encode_json(value: Any) -> bytes:
    """Return the record value of a reply (any JSON value): the bytes of infra.adapters.kafka.dumps."""
    if type(value) is Reply:
        return value.record
    return _COMPACT(value).encode()


def encode(envelope: dict[str, Any]) -> bytes:
    """Return the Kafka record value for an envelope."""
    record = getattr(envelope, "record", None)
    if record is not None:
        return record
    return encode_json(envelope)


def decode(value: bytes) -> dict[str, Any]:
    """Return the envelope in a record value: a Plain one when it holds no float or unsafe integer.

    Anything the plain parse refuses (a float, a big integer, not UTF-8, not JSON) is parsed again
    by json.loads, so the result and the errors are exactly json.loads's.
    """
    try:
        parsed = _PLAIN_JSON.decode(value.decode())
    except ValueError:  # _NotPlain, JSONDecodeError, UnicodeDecodeError
        return json.loads(value)
    return Plain(parsed) if isinstance(parsed, dict) else parsed


@lru_cache(maxsize=64)  # a transaction stamps every command and event with the same few instants
def iso(at: datetime) -> str:
    """Format a time as RFC 3339 UTC with microseconds, the only form envelopes use."""
    return instant(at)


_SECONDS: dict[tuple[int, ...], str] = {}  # "YYYY-MM-DDTHH:MM:SS." of the seconds events were recently stamped in


def instant(at: datetime) -> str:
    """`iso` without its cache, for a time formatted once (an event's own).

    A UTC time's text up to its second is remembered (`isoformat` costs more than the rest together): the events
    of one second share it, and only the microseconds are written per call.
    """
    if at.tzinfo is timezone.utc and at.year >= 1000:  # strftime's %Y pads no year below 1000
        second = (at.year, at.month, at.day, at.hour, at.minute, at.second)
        prefix = _SECONDS.get(second)
        if prefix is None:
            if len(_SECONDS) >= 256:
                _SECONDS.clear()
            prefix = _SECONDS[second] = at.isoformat("T", "seconds")[:-6] + "."
        return prefix + str(1000000 + at.microsecond)[1:] + "Z"
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def cloudevents_headers(envelope: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Return CloudEvents 1.0 Kafka binary-mode headers for an envelope."""
    tenant_id, event_type = envelope["tenant_id"], envelope["type"]
    source = _SOURCES.get(tenant_id) if type(tenant_id) is str else None
    ce_type = _TYPES.get(event_type) if type(event_type) is str else None
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", envelope["event_id"].encode()),
        ("ce_source", source or _source(tenant_id)),  # the cached bytes of the f-string before them
        ("ce_type", ce_type or _ce_type(event_type)),
        ("ce_time", envelope["recorded_at"].encode()),
        ("ce_subject", f"{envelope['aggregate_type']}/{envelope['aggregate_id']}".encode()),
        ("content-type", b"application/json"),
    ]
    if envelope.get("traceparent"):
        headers.append(("traceparent", envelope["traceparent"].encode()))
    return headers


_SOURCES: dict[str, bytes] = {}  # a processor appends for a few tenants (bounded all the same)
_TYPES: dict[str, bytes] = {}  # the event types of the catalogue


def _source(tenant_id: Any) -> bytes:
    return _kept(_SOURCES, 4096, tenant_id, f"/runledger/tenants/{tenant_id}".encode())


def _ce_type(event_type: Any) -> bytes:
    return _kept(_TYPES, 1024, event_type, f"dev.runledger.{event_type}".encode())


def _kept(cache: dict[str, bytes], most: int, key: Any, value: bytes) -> bytes:
    """Remember value under a text key (the cache emptied when full); return it."""
    if type(key) is str:
        if len(cache) >= most:
            cache.clear()
        cache[key] = value
    return value
