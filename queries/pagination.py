"""Opaque keyset cursors: stable under concurrent appends, never an OFFSET.

A cursor is base64 JSON, so anyone can forge one; each value is parsed back into the type its
key column has, and anything else is a BadCursor (400), never a database error (500).
"""
import base64
import json
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

from domain.fields import MAX_SAFE_INTEGER
from infra.adapters.http.errors import Refused


class BadCursor(Refused):
    """A cursor this API did not issue (400 invalid_cursor)."""

    def __init__(self, reason: str):
        super().__init__(400, "invalid_cursor", reason)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def instant(value: Any) -> datetime:
    """An ISO 8601 time with its offset, as `datetime.isoformat` wrote it into the cursor."""
    parsed = datetime.fromisoformat(value)  # TypeError for what is not a str
    if parsed.tzinfo is None:
        raise ValueError("an instant needs its UTC offset")
    return parsed


def identifier(value: Any) -> UUID:
    if not isinstance(value, str):
        raise TypeError("an id is a string")
    return UUID(value)


def position(value: Any) -> int:
    """A chain_seq: a JSON integer (not true), 0 to 2**53-1."""
    if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError("a position is a non-negative integer")
    return value


INSTANT_AND_ID = (instant, identifier)
CHAIN_SEQ = (position,)


def decode_cursor(cursor: str | None, parsers: tuple[Callable[[Any], Any], ...]) -> list[Any] | None:
    """The cursor's values, each read by the parser in its place; BadCursor if any does not fit."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
        if not isinstance(values, list) or len(values) != len(parsers):
            raise ValueError("wrong shape")
        return [parse(value) for parse, value in zip(parsers, values)]
    except (ValueError, TypeError, RecursionError):
        raise BadCursor("the cursor is not one this API issued") from None
