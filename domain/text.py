"""Text no store can keep, refused at the door so that nothing downstream has to cope with it.

PostgreSQL text and jsonb refuse NUL. A lone surrogate (json.loads makes one of the escape
"\\ud800") has no UTF-8 encoding, and PostgreSQL and ClickHouse both store UTF-8. The other C0
control characters are no part of text anyone means to record; tab and line breaks are.
"""
import re

UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def unstorable(text: str) -> str | None:
    """Why no store can keep `text`, or None when every store can."""
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    char, where = found.group(), f"U+{ord(found.group()):04X} at position {found.start()}"
    if char == "\x00":
        return f"has NUL ({where}), which PostgreSQL cannot store"
    if "\ud800" <= char <= "\udfff":
        return f"has a lone surrogate ({where}), which has no UTF-8 encoding"
    return f"has a control character ({where}); of those only tab, LF and CR are text"


def storable(text: str) -> str:
    """`text` itself, or ValueError saying why no store can keep it (for pydantic's AfterValidator)."""
    why = unstorable(text)
    if why is not None:
        raise ValueError(why)
    return text


def escaped(text: str) -> str:
    """`text` with each unstorable character written as a \\uXXXX escape, safe to quote in a reason."""
    return UNSTORABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
