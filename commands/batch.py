"""Batch ingest: one request body becomes its commands, each validated alone, answered in request order.

A batch is a JSON array of commands or NDJSON (one command per line). Either way it is split into
items first, and each item then meets every guard a single command's body meets (the intake's:
duplicate keys, nesting, numbers, text, size, roles, tenancy) on its own: a bad item is refused
alone with its index and its reason, and the others go on. Only what makes the request itself
unreadable refuses all of it: a body that cannot be split into items, no items, or too many.

An array is read item by item with the intake's own strict decoder, which gives each item's extent
at C speed. Only when that decoder refuses an item is its extent found by scanning brackets and
strings, so that the item can be refused alone and reading go on after it; an extent that scanning
cannot find either (an unterminated string, a bracket never closed) means the body is not an array.
"""
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

from commands import intake
from domain.errors import DomainError, Malformed
from infra.adapters.http.auth import Principal
from infra.adapters.http.errors import Refused

NDJSON = "application/x-ndjson"
DECODER = json.JSONDecoder(object_pairs_hook=intake.unique_keys, parse_constant=intake.refuse_constant,
                           parse_float=intake.finite_float)
BLANK = re.compile(r"[ \t\n\r]*")
TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|["\[\]{},]')  # a whole string, or a quote that opens none


@dataclass
class Item:
    """One command of a batch: its envelope, or the refusal the intake gave it."""
    index: int
    key: str | None = None  # its idempotency key, when it gave a valid one
    envelope: dict[str, Any] | None = None
    refusal: DomainError | None = None


def not_a_batch(why: str) -> Refused:
    return Refused(400, "malformed_batch", f"the body is not a batch ({why}): send a JSON array of commands, or "
                                           f"one command per line with Content-Type: {NDJSON}")


def too_many(most: int) -> Refused:
    return Refused(413, "too_many_commands", f"the batch has more than {most} commands, the most one request "
                                             "may carry (RUNLEDGER_BATCH_MAX); split it")


def pieces(raw: bytes, ndjson: bool, most: int) -> list[tuple[int, Any]]:
    """The items of a body, each as (its size in bytes, its parsed value or the DomainError refusing it)."""
    found = list(lines_of(raw, most) if ndjson else elements_of(raw, most))
    if not found:
        raise Refused(422, "empty_batch", "the batch has no commands")
    return found


def lines_of(raw: bytes, most: int) -> Iterator[tuple[int, Any]]:
    count = 0
    for line in raw.split(b"\n"):
        if not line.strip(b" \t\r"):
            continue
        count += 1
        if count > most:
            raise too_many(most)
        yield len(line), parsed(lambda: intake.parse_body(line))


def parsed(parse) -> Any:
    try:
        return parse()
    except DomainError as error:
        return error


def elements_of(raw: bytes, most: int) -> Iterator[tuple[int, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_a_batch(f"not UTF-8: {error}") from None
    at = BLANK.match(text).end()
    if text[at:at + 1] != "[":
        raise not_a_batch("it does not start with '['")
    at, count = BLANK.match(text, at + 1).end(), 0
    while text[at:at + 1] != "]":
        if count == most:
            raise too_many(most)
        value, end = element_at(text, at)
        yield size_of(text, at, end), value
        count, at = count + 1, BLANK.match(text, end).end()
        if text[at:at + 1] == ",":
            at = BLANK.match(text, at + 1).end()
            if text[at:at + 1] in ("]", ""):
                raise not_a_batch(f"a ',' with no command after it, before character {at}")
        elif text[at:at + 1] != "]":
            raise not_a_batch(f"expected ',' or ']' after command {count - 1}, at character {at}")
    at = BLANK.match(text, at + 1).end()
    if at != len(text):
        raise not_a_batch(f"text after the closing ']', at character {at}")


def element_at(text: str, start: int) -> tuple[Any, int]:
    """The item starting at `start` (its value, or the refusal of it alone) and where it ends."""
    try:
        value, end = DECODER.raw_decode(text, start)
    except (ValueError, RecursionError, Malformed):
        end = None
    after = None if end is None else BLANK.match(text, end).end()
    if after is None or text[after:after + 1] not in (",", "]"):
        end = extent(text, start)
        return parsed(lambda: intake.parse_text(text[start:end])), end
    return parsed(lambda: intake.checked_object(value)), end


def extent(text: str, start: int) -> int:
    """Where the item starting at `start` ends: at the first ',' or ']' outside its strings and brackets."""
    depth = 0
    for token in TOKENS.finditer(text, start):
        kind = token.group()[0]
        if token.group() == '"':
            raise not_a_batch(f"a string never ends, from character {token.start()}")
        if kind in "[{":
            depth += 1
        elif kind in "]}" and depth:
            depth -= 1
        elif kind in ",]" and not depth:
            return token.start()
    raise not_a_batch("the array never ends")


def size_of(text: str, start: int, end: int) -> int:
    length = end - start
    return length if text.isascii() else len(text[start:end].encode())


def intake_items(principal: Principal, raw: bytes, ndjson: bool, *, most: int, item_bytes: int,
                 traceparent: str | None, correlation_id: str | None, ops_tenant: str | None) -> list[Item]:
    """Every item of a batch body, validated alone; raise Refused for a body that is no batch at all."""
    return [item_of(index, size, value, principal, item_bytes, traceparent, correlation_id, ops_tenant)
            for index, (size, value) in enumerate(pieces(raw, ndjson, most))]


def item_of(index: int, size: int, value: Any, principal: Principal, item_bytes: int,
            traceparent: str | None, correlation_id: str | None, ops_tenant: str | None) -> Item:
    item = Item(index)
    try:
        intake.check_item_size(size, item_bytes)
        if isinstance(value, DomainError):
            raise value
        item.key = given_key(value)
        key = intake.pop_item_key(value)
        item.envelope = intake.envelope_of(principal, value, key, traceparent, correlation_id, ops_tenant)
    except DomainError as error:
        item.refusal = error
    return item


def given_key(body: dict[str, Any]) -> str | None:
    key = body.get("idempotency_key")
    return key if isinstance(key, str) and intake.IDEMPOTENCY_KEY.fullmatch(key) else None
