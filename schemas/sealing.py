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

from schemas.envelope import SAFE_INT, Reply, Sealed, compact_chunks, compact_json, needs_full_jcs, seal

_CANONICAL = compact_json(sort_keys=True)
_CHUNKS = compact_chunks(sort_keys=True)  # _CANONICAL(v) is "".join(_CHUNKS(v, 0)), without the lambda's frame
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


_LAYOUT_HEAD = dict.fromkeys(("event_id", "tenant_id", "chain_seq", "prev_hash", "type", "schema_version",
                              "aggregate_type", "aggregate_id", "aggregate_version", "occurred_at"))
_TENANTS: dict[str, str] = {}  # encode_basestring(tenant id), for the few tenants a processor appends for


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

    __slots__ = ("tenant_id", "fields", "head", "causation", "command", "occurred_key", "occurred", "tail",
                 "command_text", "tenant_text", "layout")

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
        self._pieces(actor, command, causation, correlation, recorded, tenant, trace, key)

    def _pieces(self, actor: str, command: str, causation: str, correlation: str, recorded: str, tenant: str,
                trace: str, key: str | None) -> None:
        self.causation = f',"causation_id":{causation},"chain_seq":'
        self.command = f',"command_id":{command},"correlation_id":{correlation},"event_id":"'
        self.tail = (f'","recorded_at":{recorded},"schema_version":',
                     f',"tenant_id":{tenant},"traceparent":{trace},"type":"')
        self.occurred_key = '",' + ('"idempotency_key":' + key + "," if key else "") + '"occurred_at":'
        self.head = f'{{"actor":{actor},"aggregate_id":"'
        self.layout = {**_LAYOUT_HEAD, **self.fields, "payload": None, "hash": None}  # `_fields`' keys, then the hash

    @classmethod
    def of_command(cls, tenant_id: str, command: dict[str, Any], subject: str, roles: list[str],
                   recorded_at: str) -> "Stamp":
        """`Stamp(tenant_id, domain.ledger.stamp_of(command, actor, recorded_at))`, the fields read once.

        `subject` and `roles` are a validated actor's (`schemas.envelope.Actor`): text, and a list of text.
        """
        command_id = command["command_id"]
        causation = command.get("causation_id") or command_id
        correlation = command.get("correlation_id") or command_id
        trace, key, occurred = command.get("traceparent"), command.get("idempotency_key"), command.get("occurred_at")
        fields = {"recorded_at": recorded_at, "actor": {"subject": subject, "roles": list(roles)},
                  "command_id": command_id, "causation_id": causation, "correlation_id": correlation,
                  "traceparent": trace}
        if key:  # as stamp_of: on the chain only when given
            fields["idempotency_key"] = key
        if occurred is not None:
            fields["occurred_at"] = occurred
        if not (type(command_id) is type(causation) is type(correlation) is type(recorded_at) is type(tenant_id)
                is str and (trace is None or type(trace) is str) and (not key or type(key) is str)
                and (occurred is None or type(occurred) is str)):
            return cls(tenant_id, fields)
        actor = _actor_text(subject, tuple(roles))
        if actor is None:
            return cls(tenant_id, fields)
        stamp = cls.__new__(cls)
        stamp.tenant_id, stamp.fields = tenant_id, fields
        stamp.occurred = None if occurred is None else encode_basestring(occurred)
        command_text = encode_basestring(command_id)
        tenant = _TENANTS.get(tenant_id)
        if tenant is None:
            if len(_TENANTS) >= 4096:
                _TENANTS.clear()
            tenant = _TENANTS[tenant_id] = encode_basestring(tenant_id)
        stamp.command_text, stamp.tenant_text = command_text, tenant  # for the reply (`accepted`)
        stamp._pieces(actor, command_text, command_text if causation is command_id else encode_basestring(causation),
                      command_text if correlation is command_id else encode_basestring(correlation),
                      encode_basestring(recorded_at), tenant, "null" if trace is None else encode_basestring(trace),
                      encode_basestring(key) if key else None)
        return stamp


def seal_event(stamp: Stamp, event_id: str, chain_seq: int, prev_hash: str, event_type: str, schema_version: int,
               aggregate_type: str, aggregate_id: str, aggregate_version: int, occurred_at: str,
               payload: dict[str, Any]) -> Sealed:
    """Return the sealed envelope of one event, with its record value: what `seal` returns for it.

    The envelope is the stamp's `layout` copied (its keys in the order of the dict `seal` is given, then `hash`)
    with this event's values put in it, rather than that dict built and then copied into a `Sealed`.
    """
    if (stamp.head is None or type(payload) is not dict
            or not type(chain_seq) is type(schema_version) is type(aggregate_version) is int  # no bool either
            or not (-SAFE_INT <= chain_seq <= SAFE_INT and -SAFE_INT <= schema_version <= SAFE_INT
                    and -SAFE_INT <= aggregate_version <= SAFE_INT)
            or not type(event_id) is type(prev_hash) is type(event_type) is type(aggregate_type)
            is type(aggregate_id) is type(occurred_at) is str
            or not _BARE.fullmatch(f"{event_id}{prev_hash}{event_type}{aggregate_type}{aggregate_id}"
                                   f"{'' if stamp.occurred else occurred_at}")
            or not _plain(payload)):
        return seal(_fields(stamp, event_id, chain_seq, prev_hash, event_type, schema_version, aggregate_type,
                            aggregate_id, aggregate_version, occurred_at, payload))
    occurred = stamp.occurred or f'"{occurred_at}"'
    recorded, tenant = stamp.tail
    text = (f'{stamp.head}{aggregate_id}","aggregate_type":"{aggregate_type}","aggregate_version":{aggregate_version}'
            f'{stamp.causation}{chain_seq}{stamp.command}{event_id}{stamp.occurred_key}{occurred},"payload":'
            f'{"".join(_CHUNKS(payload, 0)) if _CHUNKS else _CANONICAL(payload)},"prev_hash":"{prev_hash}{recorded}{schema_version}{tenant}{event_type}"}}')
    if not text.isascii():
        return seal(_fields(stamp, event_id, chain_seq, prev_hash, event_type, schema_version, aggregate_type,
                            aggregate_id, aggregate_version, occurred_at, payload))
    body = text.encode()
    digest = hashlib.sha256(body).hexdigest()
    sealed = Sealed(stamp.layout)
    sealed["event_id"], sealed["tenant_id"], sealed["chain_seq"], sealed["prev_hash"] = (
        event_id, stamp.tenant_id, chain_seq, prev_hash)
    sealed["type"], sealed["schema_version"], sealed["aggregate_type"], sealed["aggregate_id"] = (
        event_type, schema_version, aggregate_type, aggregate_id)
    sealed["aggregate_version"], sealed["payload"], sealed["hash"] = aggregate_version, payload, digest
    if stamp.occurred is None:  # else the client's time, in the stamp's fields, is every event's `occurred_at`
        sealed["occurred_at"] = occurred_at
    sealed.record = b"".join((memoryview(body)[:-1], b',"hash":"', digest.encode(), b'"}'))  # one copy of the body
    sealed.summary = (f'{{"chain_seq":{chain_seq},"hash":"{digest}","type":"{event_type}","event_id":"{event_id}",'
                      f'"aggregate_id":"{aggregate_id}","aggregate_version":{aggregate_version}}}')
    return sealed


def _fields(stamp: Stamp, event_id: Any, chain_seq: Any, prev_hash: Any, event_type: Any, schema_version: Any,
            aggregate_type: Any, aggregate_id: Any, aggregate_version: Any, occurred_at: Any,
            payload: Any) -> dict[str, Any]:
    """The envelope `seal` is given for these fields."""
    return {"event_id": event_id, "tenant_id": stamp.tenant_id, "chain_seq": chain_seq, "prev_hash": prev_hash,
            "type": event_type, "schema_version": schema_version, "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id, "aggregate_version": aggregate_version, "occurred_at": occurred_at,
            **stamp.fields, "payload": payload}


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


def accepted(command_id: Any, tenant_id: Any, key: Any, digest: Any, aggregate_id: Any, version: Any,
             events: list[dict[str, Any]], envelopes: list[Sealed], stamp: Stamp | None = None) -> dict[str, Any]:
    """`accepted_reply` of the plain reply dict (`REPLY_KEYS`, status accepted, not replayed), built from its fields.

    `stamp`, the command's, if it has the command id and tenant encoded already.
    """
    reply = {"command_id": command_id, "tenant_id": tenant_id, "idempotency_key": key, "request_digest": digest,
             "status": "accepted", "replayed": False, "aggregate_id": aggregate_id, "aggregate_version": version,
             "events": events}
    if not (type(command_id) is type(tenant_id) is type(digest) is type(aggregate_id) is str
            and (key is None or type(key) is str) and type(version) is int):
        return reply
    summaries = []
    for env in envelopes:
        text = getattr(env, "summary", None)
        if text is None:
            return reply
        summaries.append(text)
    fast = Reply(reply)
    if (stamp is not None and getattr(stamp, "command_text", None) is not None
            and stamp.fields["command_id"] is command_id and stamp.tenant_id is tenant_id):
        command, tenant = stamp.command_text, stamp.tenant_text
    else:
        command, tenant = encode_basestring(command_id), encode_basestring(tenant_id)
    fast.record = (f'{{"command_id":{command},"tenant_id":{tenant},'
                   f'"idempotency_key":{"null" if key is None else encode_basestring(key)},'
                   f'"request_digest":{encode_basestring(digest)},"status":"accepted","replayed":false,'
                   f'"aggregate_id":{encode_basestring(aggregate_id)},"aggregate_version":{version},'
                   f'"events":[{",".join(summaries)}]}}').encode()
    return fast


def _plain(payload: dict[str, Any]) -> bool:
    """`not needs_full_jcs(payload)`, with a payload of text, flags, small integers and maps of text decided at once."""
    for value in payload.values():
        kind = type(value)
        if not (kind is str or value is None or kind is bool or (kind is int and -SAFE_INT <= value <= SAFE_INT)):
            if kind is dict:  # labels, a withheld marker: text only is plain
                for inner in value.values():
                    if type(inner) is not str:
                        return not needs_full_jcs(payload)
                continue
            return not needs_full_jcs(payload)
    return True
