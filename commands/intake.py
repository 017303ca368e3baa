"""Turn an HTTP request body into a command envelope, or refuse it with a specific reason."""
import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

import rfc8785
from pydantic import ValidationError
from uuid_utils.compat import uuid7

from commands.auth import Principal
from domain.commands import COMMAND_TYPES
from domain.handlers import HANDLERS
from domain.ledger import COMMAND
from schemas.envelope import iso

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
SYSTEM_ONLY = frozenset({"ExpireApproval"})
CLIENT_TYPES = sorted(set(COMMAND_TYPES) - SYSTEM_ONLY)


class Refused(Exception):
    def __init__(self, status: int, code: str, reason: str, details: Any = None):
        super().__init__(reason)
        self.status, self.code, self.reason, self.details = status, code, reason, details


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise Refused(400, "malformed_json", f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise Refused(422, "invalid_command", "the body must be a JSON object with a 'type'")
    return body


def check_type(body: dict[str, Any]) -> str:
    kind = body.get("type")
    if kind in SYSTEM_ONLY:
        raise Refused(403, "system_command", f"{kind} is issued by runledger itself, not by clients")
    if kind not in COMMAND_TYPES:
        raise Refused(422, "unknown_command_type",
                      f"unknown command type {kind!r}; known types: {', '.join(CLIENT_TYPES)}")
    return kind


def check_expected_version(body: dict[str, Any]) -> int | None:
    version = body.pop("expected_version", None)
    if version is not None and (type(version) is not int or version < 0):
        raise Refused(422, "invalid_command", "expected_version must be a non-negative integer")
    return version


def validate(body: dict[str, Any]) -> Any:
    try:
        return COMMAND.validate_python(body)
    except ValidationError as error:
        details = [{"field": ".".join(str(p) for p in e["loc"][1:]), "problem": e["msg"]}
                   for e in error.errors(include_url=False)]
        summary = "; ".join(f"{d['field'] or 'body'}: {d['problem']}" for d in details)
        raise Refused(422, "invalid_command", f"invalid {body['type']}: {summary}", details) from None


def check_roles(command: Any, principal: Principal) -> None:
    _, roles = HANDLERS[type(command)]
    if roles and not roles.intersection(principal.roles):
        raise Refused(403, "missing_role", f"{command.type} needs one of the roles {sorted(roles)}")


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise Refused(422, "invalid_idempotency_key",
                      "Idempotency-Key must be 1-200 printable ASCII characters without spaces")


def command_envelope(principal: Principal, raw: bytes, idempotency_key: str | None,
                     traceparent: str | None, correlation_id: str | None) -> dict[str, Any]:
    """Validate a request completely and return the envelope to put on `ledger.commands`."""
    check_idempotency_key(idempotency_key)
    body = parse_body(raw)
    expected_version = check_expected_version(body)
    check_type(body)
    command = validate(body)
    check_roles(command, principal)
    canonical_body = command.model_dump(mode="json")
    command_id = str(uuid7())
    digest_source = {"body": canonical_body, "expected_version": expected_version}
    return {
        "command_id": command_id,
        "tenant_id": principal.tenant_id,
        "idempotency_key": idempotency_key,
        "request_digest": hashlib.sha256(rfc8785.dumps(digest_source)).hexdigest(),
        "expected_version": expected_version,
        "actor": {"subject": principal.subject, "roles": list(principal.roles)},
        "issued_at": iso(datetime.now(timezone.utc)),
        "traceparent": traceparent,
        "correlation_id": correlation_id,
        "body": canonical_body,
    }
