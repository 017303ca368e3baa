"""How content fields sit in the read models, and the placeholders a reader shows for them (docs/adr/0008).

A content field of an event payload is one of: a plain value (a string; for run.requested labels,
an object) from logs written before content was sealed; None (no text given); a withheld marker,
`{"withheld": "metadata-only"}` (the tenant stores no content) or `{"withheld": "subject shredded"}`;
or a sealed field (cipher.py). Projectors keep a jsonb column's value as it is and put an object
in a text column as its compact JSON text (`column_text`); `recorded` turns that text back into
the object, and leaves every other text (a legacy plain value) as it was.
"""
import json
from typing import Any

from infra.adapters.keys.cipher import FIELDS, SHREDDED

NOT_STORED = "[not stored]"  # the tenant stored no content (metadata-only)
UNREADABLE = "[unreadable]"  # a sealed field that does not open: altered, or its key cannot be unwrapped
NO_KEK = "[unreadable: no key-encryption key configured]"  # this process was given no RUNLEDGER_KEK
WITHHELD = {"metadata-only": NOT_STORED, "subject shredded": SHREDDED}
PLACEHOLDERS = frozenset({SHREDDED, NOT_STORED, UNREADABLE, NO_KEK})


def is_withheld(value: Any) -> bool:
    """A withheld marker: an object whose only member is a string `withheld`."""
    return isinstance(value, dict) and value.keys() == {"withheld"} and isinstance(value["withheld"], str)


def looks_sealed(value: Any) -> bool:
    """An object with exactly a sealed field's members, whether or not it is a well-formed one."""
    return isinstance(value, dict) and value.keys() == FIELDS


def is_marked(value: Any) -> bool:
    """Whether a content value is a withheld marker or (looks like) a sealed field, not a plain value."""
    return is_withheld(value) or looks_sealed(value)


def column_text(value: Any) -> Any:
    """What a text column keeps for a content value: an object as compact JSON text, anything else as it is."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


def recorded(value: Any) -> Any:
    """A content value read back from its column: the marker or sealed object a text column holds as
    JSON text, or the value itself (None, a legacy plain string, a jsonb object)."""
    if not isinstance(value, str) or not value.startswith("{"):
        return value
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):  # a legacy text that only starts like JSON
        return value
    return parsed if is_marked(parsed) else value
