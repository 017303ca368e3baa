"""Sealing the processor's new events: each envelope's canonical JSON built once, from pieces.

An envelope's keys are fixed, so their RFC 8785 order is known in advance. The fields a command's
events share are encoded once per command (`Stamp`); the ids, hashes, instants and catalogue names
the processor writes itself need no escaping (checked, not assumed: `_BARE`); only the payload goes
through the JSON encoder. For such content the text is exactly `schemas.envelope.canonical`'s fast
form. Anything the pieces cannot vouch for (a float or an integer beyond ±(2^53−1), non-ASCII text,
a field of another type, a key the layout does not know) is sealed by `schemas.envelope.seal`, the
reference, so the bytes hashed are always the reference's (tests/unit/test_encode_seal.py).
"""
import hashlib
import re
from functools import lru_cache
from json.encoder import encode_basestring  # the escaping of json.dumps(ensure_ascii=False)
from typing import Any

from schemas.envelope import SAFE_INT, Reply, Sealed, compact_json, needs_full_jcs, seal

_CANONICAL = compact_json(sort_keys=True)
_BARE = re.compile(r"[0-9A-Za-z_.:-]*")  # characters every RFC 8785 writer copies as they are
REQUIRED = frozenset({"recorded_at", "actor", "command_id", "causation_id", "correlation_id", "traceparent"})
STAMP_KEYS = REQUIRED | {"idempotency_key", "occurred_at"}  # the optional two only when the command has them


def _text(value: Any) -> str:
    """The canonical JSON of a shared text field (a string or null); anything else is not plain."""
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    raise _NotPlain


class _NotPlain(Exception):
    pass


@lru_cache(maxsize=1024)  # a tenant's commands come from a few actors
def _actor_text(subject: Any, roles: tuple[Any, ...]) -> str | None:
    if type(subject) is not str or not all(type(r) is str for r in roles):
        return None  # a str never equals another type, so no such key shares an entry with a plain one
    return _CANONICAL({"roles": list(roles), "subject": subject})


def _actor(actor: Any) -> str:
    roles = actor.get("roles") if type(actor) is dict and len(actor) == 2 else None
    try:
        text = _actor_text(actor.get("subject"), tuple(roles)) if type(roles) is list else None
    except TypeError:  # a role that cannot be a key cannot be text either
        text = None
    if text is None:
        raise _NotPlain
    return text


class Stamp:
    """The fields every event of one command carries (`STAMP_KEYS`), their canonical JSON encoded once.

    `head` is None where the fast form does not apply to them; every event is then sealed by `seal`.
    """

    __slots__ = ("tenant_id", "fields", "head", "causation", "command", "occurred_key", "occurred", "tail")

    def __init__(self, tenant_id: str, fields: dict[str, Any]):
        self.tenant_id, self.fields, self.head, self.occurred = tenant_id, fields, None, None
        keys = fields.keys()
        if not REQUIRED <= keys <= STAMP_KEYS:
            return
        try:
            actor = _actor(fields["actor"])
            command, causation, correlation = fields["command_id"], fields["causation_id"], fields["correlation_id"]
            recorded, trace = fields["recorded_at"], fields["traceparent"]
            if type(command) is type(causation) is type(correlation) is type(recorded) is type(tenant_id) is str:
                command, causation, correlation, recorded, tenant = (
                    encode_basestring(command), encode_basestring(causation), encode_basestring(correlation),
                    encode_basestring(recorded), encode_basestring(tenant_id))
            else:
                command, causation, correlation, recorded, tenant = (
                    _text(command), _text(causation), _text(correlation), _text(recorded), _text(tenant_id))
            trace = encode_basestring(trace) if type(trace) is str else _text(trace)
            key = _text(fields["idempotency_key"]) if "idempotency_key" in keys else None
            self.occurred = _text(fields["occurred_at"]) if "occurred_at" in keys else None
        except _NotPlain:
            return
        self.causation = f',"causation_id":{causation},"chain_seq":'
        self.command = f',"command_id":{command},"correlation_id":{correlation},"event_id":"'
        self.tail = (f'","recorded_at":{recorded},"schema_version":',
                     f',"tenant_id":{tenant},"traceparent":{trace},"type":"')
        self.occurred_key = '",' + ('"idempotency_key":' + key + "," if key else "") + '"occurred_at":'
        self.head = f'{{"actor":{actor},"aggregate_id":"'


def seal_event(stamp: Stamp, event_id: str, chain_seq: int, prev_hash: str, event_type: str, schema_version: int,
               aggregate_type: str, aggregate_id: str, aggregate_version: int, occurred_at: str,
               payload: dict[str, Any]) -> Sealed:
    """Return the sealed envelope of one event, with its record value: what `seal` returns for it."""
    fields = {"event_id": event_id, "tenant_id": stamp.tenant_id, "chain_seq": chain_seq, "prev_hash": prev_hash,
              "type": event_type, "schema_version": schema_version, "aggregate_type": aggregate_type,
              "aggregate_id": aggregate_id, "aggregate_version": aggregate_version, "occurred_at": occurred_at,
              **stamp.fields, "payload": payload}
    if (stamp.head is None or type(payload) is not dict
            or not type(chain_seq) is type(schema_version) is type(aggregate_version) is int  # no bool either
            or not (-SAFE_INT <= chain_seq <= SAFE_INT and -SAFE_INT <= schema_version <= SAFE_INT
                    and -SAFE_INT <= aggregate_version <= SAFE_INT)
            or not type(event_id) is type(prev_hash) is type(event_type) is type(aggregate_type)
            is type(aggregate_id) is type(occurred_at) is str
            or not _BARE.fullmatch(f"{event_id}{prev_hash}{event_type}{aggregate_type}{aggregate_id}"
                                   f"{'' if stamp.occurred else occurred_at}")
            or not _plain(payload)):
        return seal(fields)
    occurred = stamp.occurred or f'"{occurred_at}"'
    recorded, tenant = stamp.tail
    text = (f'{stamp.head}{aggregate_id}","aggregate_type":"{aggregate_type}","aggregate_version":{aggregate_version}'
            f'{stamp.causation}{chain_seq}{stamp.command}{event_id}{stamp.occurred_key}{occurred},"payload":'
            f'{_CANONICAL(payload)},"prev_hash":"{prev_hash}{recorded}{schema_version}{tenant}{event_type}"}}')
    if not text.isascii():
        return seal(fields)
    body = text.encode()
    digest = hashlib.sha256(body).hexdigest()
    fields["hash"] = digest
    sealed = Sealed(fields)
    sealed.record = body[:-1] + b',"hash":"' + digest.encode() + b'"}'
    sealed.summary = (f'{{"chain_seq":{chain_seq},"hash":"{digest}","type":"{event_type}","event_id":"{event_id}",'
                      f'"aggregate_id":"{aggregate_id}","aggregate_version":{aggregate_version}}}')
    return sealed


REPLY_KEYS = ("command_id", "tenant_id", "idempotency_key", "request_digest", "status", "replayed", "aggregate_id",
              "aggregate_version", "events")


def accepted_reply(reply: dict[str, Any], envelopes: list[Sealed]) -> dict[str, Any]:
    """The reply of an accepted command as a `Reply` whose record value is written from pieces, as an envelope is.

    The summaries of the events come from `seal_event` (their fields checked bare there); the command's own
    fields are escaped as `encode_json` escapes them. A reply of another shape (a policy outcome, an event the
    reference sealed, a field of another type) is returned as it is, for `encode_json` to encode.
    """
    summaries = [getattr(env, "summary", None) for env in envelopes]
    if len(reply) != 9 or None in summaries or tuple(reply) != REPLY_KEYS:
        return reply
    command_id, tenant_id, key, digest, status, replayed, aggregate_id, version, _ = reply.values()
    if (type(command_id) is not str or type(tenant_id) is not str or not (key is None or type(key) is str)
            or type(digest) is not str or status != "accepted" or type(status) is not str or replayed is not False
            or type(aggregate_id) is not str or type(version) is not int):
        return reply
    text = (f'{{"command_id":{encode_basestring(command_id)},"tenant_id":{encode_basestring(tenant_id)},'
            f'"idempotency_key":{"null" if key is None else encode_basestring(key)},'
            f'"request_digest":{encode_basestring(digest)},"status":"accepted","replayed":false,'
            f'"aggregate_id":{encode_basestring(aggregate_id)},"aggregate_version":{version},'
            f'"events":[{",".join(summaries)}]}}')
    fast = Reply(reply)
    fast.record = text.encode()
    return fast


def _plain(payload: dict[str, Any]) -> bool:
    """`not needs_full_jcs(payload)`, with a flat payload of text, flags and small integers decided at once."""
    for value in payload.values():
        kind = type(value)
        if not (kind is str or value is None or kind is bool or (kind is int and -SAFE_INT <= value <= SAFE_INT)):
            return not needs_full_jcs(payload)
    return True
