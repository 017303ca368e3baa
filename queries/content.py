"""What the read side shows for content fields (docs/adr/0008): the plaintext while its key lives.

Every query that returns a content field passes the fields of its whole response to one
`ContentReader.reveal`, which opens every sealed one with a single key-store call and shows:

- a sealed field: its plaintext; `[shredded]` once its subject's key is gone; `[unreadable]` if it
  does not open (altered, or its key cannot be unwrapped: logged, never a 500); and
  `[unreadable: no key-encryption key configured]` in a process given no RUNLEDGER_KEK;
- `{"withheld": "metadata-only"}`: `[not stored]`; `{"withheld": "subject shredded"}`: `[shredded]`;
- None, and plain values from logs written before content was sealed: unchanged.

Labels are sealed as the canonical JSON text of their object, so a readable one is shown as that
object and any other as its placeholder string. Nothing here caches a key or a plaintext: each
response asks the store again, so a shred shows at once and a stale plaintext never does.
"""
import json
import logging
from typing import Any, Iterable, Sequence

from infra.adapters.keys.cipher import SHREDDED, KeyUnwrapError, SealError, is_sealed
from infra.adapters.keys.port import Content, KeyStoreError
from infra.adapters.keys.stored import (NO_KEK, NOT_STORED, UNREADABLE, WITHHELD, is_marked, is_withheld,
                                        looks_sealed, recorded)

log = logging.getLogger("runledger.content")
JSON_FIELDS = frozenset({"labels"})  # content fields whose plaintext is the JSON text of an object


class ContentReader:
    """Opens the content fields of a response through a Content (None: no KEK in this process)."""

    def __init__(self, content: Content | None = None):
        self.content = content

    async def reveal(self, tenant_id: str, fields: Iterable[tuple[dict, str]]) -> None:
        """Replace each row[name] of fields, in place, by what a reader is shown; one key-store call in all."""
        fields = list(fields)
        shown = await self.show(tenant_id, [(row[name], name in JSON_FIELDS) for row, name in fields])
        for (row, name), value in zip(fields, shown):
            row[name] = value

    async def show(self, tenant_id: str, values: Sequence[tuple[Any, bool]]) -> list[Any]:
        """What a reader is shown for each (stored value, is a JSON field), in order."""
        stored = [recorded(value) for value, _ in values]
        sealed = [value for value in stored if is_sealed(value)]
        opened = iter(await self.open(tenant_id, sealed))
        return [self.decoded(tenant_id, value, next(opened), as_json) if is_sealed(value)
                else self.placeholder(tenant_id, value, raw) for (raw, as_json), value in zip(values, stored)]

    async def open(self, tenant_id: str, sealed: list[dict[str, str]]) -> list[str | SealError]:
        if not sealed:
            return []
        if self.content is None:
            return [NO_KEK] * len(sealed)
        try:
            return await self.content.open_stored(tenant_id, sealed)
        except (KeyStoreError, KeyUnwrapError) as error:  # the KEKs given do not unwrap these keys
            kids = sorted({value["kid"] for value in sealed})
            log.error("content of tenant %s under keys %s cannot be opened: %s; shown as %s",
                      tenant_id, kids, error, UNREADABLE)
            return [UNREADABLE] * len(sealed)

    @staticmethod
    def decoded(tenant_id: str, value: dict[str, str], opened: str | SealError, as_json: bool) -> Any:
        if isinstance(opened, SealError):
            log.warning("a content field of tenant %s under key %s does not open (%s); shown as %s",
                        tenant_id, value["kid"], opened, UNREADABLE)
            return UNREADABLE
        if not as_json or opened in (SHREDDED, UNREADABLE, NO_KEK):
            return opened
        try:
            return json.loads(opened)
        except (ValueError, RecursionError):
            log.warning("a JSON content field of tenant %s under key %s opened to text that is not JSON; "
                        "shown as %s", tenant_id, value["kid"], UNREADABLE)
            return UNREADABLE

    @staticmethod
    def placeholder(tenant_id: str, value: Any, raw: Any) -> Any:
        """What is shown for a value that is not a well-formed sealed field."""
        if is_withheld(value):
            return WITHHELD.get(value["withheld"], NOT_STORED)
        if looks_sealed(value):  # a sealed field of an unknown algorithm, or with a member that is not text
            log.warning("a content field of tenant %s is not a sealed field this reader knows (alg %r); shown as %s",
                        tenant_id, value.get("alg"), UNREADABLE)
            return UNREADABLE
        return raw


def content_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's content fields that are sealed or withheld, by name, still as stored (reveal opens them)."""
    return {name: value for name, value in payload.items() if is_marked(value)}
