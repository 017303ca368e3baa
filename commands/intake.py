"""Turn an HTTP request body into a command envelope, or refuse it with a specific reason.

Refusals are domain rejections (`domain.errors`) with a specific code and no status: the HTTP
adapter maps each code to its status (`infra/adapters/http/errors.py`).
"""
import hashlib
import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Iterator

from pydantic import ValidationError
from uuid_utils.compat import uuid7

from domain.client_time import read_occurred_at
from domain.commands import COMMAND_TYPES
from domain.fields import MAX_SAFE_INTEGER
from domain.errors import Forbidden, InvalidCommand, Malformed
from domain.handlers import HANDLERS
from domain.ledger import COMMAND
from domain.text import escaped, unstorable
from infra.adapters.http.auth import Principal
from schemas.envelope import canonical, iso

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
MAX_DEPTH = 32  # commands nest two levels; deeper is an attack on the parser, not a command
SYSTEM_ONLY = frozenset({"ExpireApproval", "SignCheckpoint"})
CLIENT_TYPES = sorted(set(COMMAND_TYPES) - SYSTEM_ONLY)


def parse_body(raw: bytes) -> dict[str, Any]:
    """Read the body as one JSON object that every JSON parser would read the same way."""
    try:
        return parse_text(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise Malformed(f"the body is not valid JSON: {error}") from None


def parse_text(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text, object_pairs_hook=unique_keys, parse_constant=refuse_constant,
                          parse_float=finite_float)
    except RecursionError:
        raise too_deep() from None
    except ValueError as error:
        raise Malformed(f"the body is not valid JSON: {error}") from None
    return checked_object(body)


def checked_object(body: Any) -> dict[str, Any]:
    """A parsed body as a command's object: an object, no deeper than MAX_DEPTH."""
    if not isinstance(body, dict):
        raise InvalidCommand("the body must be a JSON object with a 'type'")
    check_depth(body)
    return body


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse a repeated member: parsers disagree on which value wins."""
    members: dict[str, Any] = {}
    for key, value in pairs:
        if key in members:
            raise Malformed(f"the body repeats the key '{escaped(key)}'", "duplicate_key")
        members[key] = value
    return members


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


def too_deep() -> Malformed:
    return Malformed(f"the body nests arrays or objects deeper than {MAX_DEPTH} levels", "too_deeply_nested")


def check_depth(body: dict[str, Any]) -> None:
    level, containers = 1, [body]
    while containers:
        if level > MAX_DEPTH:
            raise too_deep()
        containers = [item for container in containers
                      for item in (container.values() if isinstance(container, dict) else container)
                      if isinstance(item, (dict, list))]
        level += 1


def strings_in(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string of a parsed body, object keys included, with its path, in document order."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield path + (key,), key
            yield from strings_in(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_in(item, path + (str(index),))


def check_text(body: dict[str, Any]) -> None:
    """Refuse any string, at any depth, that no store could keep, naming where it is."""
    for path, text in strings_in(body):
        if why := unstorable(text):
            field = ".".join(map(escaped, path))
            raise InvalidCommand(f"{field}: {why}", "invalid_text", details=[{"field": field, "problem": why}])


def check_type(body: dict[str, Any]) -> str:
    kind = body.get("type")
    if kind is not None and not isinstance(kind, str):
        raise InvalidCommand("type: must be a string naming a command, e.g. 'RequestRun'",
                             details=[{"field": "type", "problem": "must be a string"}])
    if kind in SYSTEM_ONLY:
        raise Forbidden(f"{kind} is issued by runledger itself, not by clients", "system_command")
    if kind not in COMMAND_TYPES:
        raise InvalidCommand(f"unknown command type {kind!r}; known types: {', '.join(CLIENT_TYPES)}",
                             "unknown_command_type")
    return kind


def check_expected_version(body: dict[str, Any]) -> int | None:
    version = body.pop("expected_version", None)
    if version is not None and (type(version) is not int or not 0 <= version <= MAX_SAFE_INTEGER):
        raise InvalidCommand(f"expected_version must be an integer from 0 to {MAX_SAFE_INTEGER}",
                             details=[{"field": "expected_version", "problem": "must be an integer from 0 to 2**53-1"}])
    return version


def validate(body: dict[str, Any]) -> Any:
    try:
        return COMMAND.validate_python(body)
    except ValidationError as error:
        details = [{"field": ".".join(str(p) for p in e["loc"][1:]), "problem": e["msg"]}
                   for e in error.errors(include_url=False)]
        summary = "; ".join(f"{d['field'] or 'body'}: {d['problem']}" for d in details)
        raise InvalidCommand(f"invalid {body['type']}: {summary}", details=details) from None


def check_roles(command: Any, principal: Principal) -> None:
    _, roles = HANDLERS[type(command)]
    if roles and not roles.intersection(principal.roles):
        raise Forbidden(f"{command.type} needs one of the roles {sorted(roles)}", "missing_role")


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidCommand("Idempotency-Key must be 1-200 printable ASCII characters without spaces",
                             "invalid_idempotency_key")


def pop_item_key(body: dict[str, Any]) -> str:
    """A batch item's own idempotency key (its `idempotency_key` member): required, checked like the header."""
    key = body.pop("idempotency_key", None)
    if key is None:
        raise InvalidCommand("idempotency_key: each command of a batch needs its own, so that the batch can be "
                             "retried without doubling anything", "missing_idempotency_key",
                             details=[{"field": "idempotency_key", "problem": "Field required"}])
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
        problem = "must be 1-200 printable ASCII characters without spaces"
        raise InvalidCommand(f"idempotency_key {problem}", "invalid_idempotency_key",
                             details=[{"field": "idempotency_key", "problem": problem}])
    return key


def check_item_size(size: int, limit: int) -> None:
    if size > limit:
        raise InvalidCommand(f"the command is {size} bytes; each command of a batch is held to "
                             f"RUNLEDGER_MAX_BODY_BYTES = {limit}", "item_too_large")


def check_occurred_at(body: dict[str, Any]) -> str | None:
    """The client's `occurred_at`, if it states one, in the envelopes' form (domain/client_time.py)."""
    value = body.pop("occurred_at", None)
    return None if value is None else read_occurred_at(value)


def target(command: Any, principal: Principal, ops_tenant: str | None) -> tuple[str, dict[str, Any]]:
    """The tenant whose chain decides the command, and the actor it records there.

    A command naming another tenant (a platform hold or sweep) is taken only from an admin of the
    ops tenant, and is recorded on that tenant's chain with the role `super_admin`.
    """
    actor = {"subject": principal.subject, "roles": list(principal.roles)}
    named = getattr(command, "tenant_id", None)
    if named is None or named == principal.tenant_id:
        return principal.tenant_id, actor
    if ops_tenant is not None and principal.tenant_id == ops_tenant and "admin" in principal.roles:
        return named, {"subject": principal.subject, "roles": ["super_admin"]}
    raise Forbidden(f"{command.type} names tenant {named!r}: only an admin of the platform's ops tenant "
                    "(a super_admin) may act on another tenant", "cross_tenant")


def command_envelope(principal: Principal, raw: bytes, idempotency_key: str | None,
                     traceparent: str | None, correlation_id: str | None,
                     ops_tenant: str | None = None) -> dict[str, Any]:
    """Validate a request completely and return the envelope to put on `ledger.commands`."""
    check_idempotency_key(idempotency_key)
    return envelope_of(principal, parse_body(raw), idempotency_key, traceparent, correlation_id, ops_tenant)


def envelope_of(principal: Principal, body: dict[str, Any], idempotency_key: str | None,
                traceparent: str | None, correlation_id: str | None,
                ops_tenant: str | None = None) -> dict[str, Any]:
    """Validate one parsed command (a request's body, or an item of a batch) and return its envelope."""
    check_text(body)
    expected_version = check_expected_version(body)
    occurred_at = check_occurred_at(body)
    check_type(body)
    command = validate(body)
    check_roles(command, principal)
    tenant_id, actor = target(command, principal, ops_tenant)
    canonical_body = command.model_dump(mode="json")
    command_id = str(uuid7())
    digest_source = {"body": canonical_body, "expected_version": expected_version}
    client_time = {} if occurred_at is None else {"occurred_at": occurred_at}  # absent: digests as before
    return {
        "command_id": command_id,
        "tenant_id": tenant_id,
        "idempotency_key": idempotency_key,
        "request_digest": hashlib.sha256(canonical({**digest_source, **client_time})).hexdigest(),  # RFC 8785
        "expected_version": expected_version,
        "actor": actor,
        "issued_at": iso(datetime.now(timezone.utc)),
        "traceparent": traceparent,
        "correlation_id": correlation_id,
        "body": canonical_body,
        **client_time,
    }
