"""domain/fields.py: a `Name` accepts and refuses exactly what it did while it also ran `storable`."""
import random
from typing import Annotated

import pytest
from pydantic import AfterValidator, StringConstraints, TypeAdapter, ValidationError

from domain.fields import Name
from domain.text import storable

WITH_STORABLE = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$"),
                          AfterValidator(storable)]


def outcome(adapter: TypeAdapter, value):
    try:
        return "ok", adapter.validate_python(value)
    except ValidationError as error:
        return "refused", [(e["type"], e["loc"], e["msg"]) for e in error.errors(include_url=False)]


def samples() -> list[str]:
    rng = random.Random(14)
    alphabet = [chr(c) for c in range(0x00, 0x21)] + ["\x7f", "a", "é", "日", "𝄞", "\u2028", "\ud800", "\udbff",
                                                       "\udc00", "\udfff", "\t", "\n", "\r"]
    single = [chr(c) for c in range(0x00, 0x80)] + [chr(c) for c in range(0xD800, 0xE000, 97)] + ["", "x" * 200,
                                                                                             "x" * 201]
    return single + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(3000)]


@pytest.mark.parametrize("shape", ["name", "labels"])
def test_a_name_is_validated_as_it_was_with_storable(shape):
    if shape == "name":
        new, old = TypeAdapter(Name), TypeAdapter(WITH_STORABLE)
    else:
        new, old = TypeAdapter(dict[Name, Name]), TypeAdapter(dict[WITH_STORABLE, WITH_STORABLE])
    values = samples() if shape == "name" else [{k: "v", "k": k} for k in samples()]
    results = [(outcome(new, v), outcome(old, v)) for v in values]
    assert [v for v, (a, b) in zip(values, results) if a != b] == []
    assert {a[0] for a, _ in results} == {"ok", "refused"}
