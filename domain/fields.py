"""The field types and base class every command is built from."""
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, Strict,
                      StringConstraints)

from domain.text import storable

MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer RFC 8785 (and so the hash rule) keeps exact


def json_integer(value: Any) -> Any:
    """Refuse what is not an int before a Literal compares it: Literal[1, 2] takes True and 1.0."""
    if type(value) is not int:
        raise ValueError("Input should be a JSON integer")
    return value


Text = Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(storable)]
# No `storable` check: the pattern refuses every C0 control and pydantic-core every lone surrogate
# (string_unicode) before any after-validator would run, so it never refused a name (test_decide_fields).
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Micros = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
RiskTier = Literal["low", "medium", "high", "critical"]
# Strict validation wants UUID instances; ids arrive as JSON strings, which are the only lax input.
Id = Annotated[UUID, Strict(False)]
# Instants arrive as RFC 3339 strings with an offset; a time without one is refused.
Instant = Annotated[AwareDatetime, Strict(False)]
TenantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
RecordClass = Literal["audit", "operational"]


class Command(BaseModel):
    # Strict: a JSON integer is the only integer (not true, 1.0 or "1"), a string the only string.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
