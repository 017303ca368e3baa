"""Opaque keyset cursors: stable under concurrent appends, never an OFFSET."""
import base64
import json
from typing import Any


class BadCursor(ValueError):
    pass


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise BadCursor("the cursor is not one this API issued") from None
    if not isinstance(values, list) or len(values) != arity:
        raise BadCursor("the cursor is not one this API issued")
    return values
