"""Exported JSON Schemas stay in step with the code; old payload versions still read."""
import json

import pytest

from domain.registry import EVENT_CLASSES, schema_version_of, upcast
from schemas import export


def test_exported_schemas_match_the_code():
    for name, doc in export.documents().items():
        path = export.OUT / name
        assert path.exists(), f"{name} not exported: run python -m schemas.export"
        assert path.read_text() == export.render(doc), f"{name} drifted: run python -m schemas.export"


def test_every_event_type_has_a_payload_schema():
    names = {p.name for p in (export.OUT / "events").iterdir()}
    # every version of every payload stays documented: an old event always still reads
    assert names == {f"{t}.v{v}.json" for t, cls in EVENT_CLASSES.items() for v in range(1, schema_version_of(cls) + 1)}
    requested = json.loads((export.OUT / "events" / "approval.requested.v1.json").read_text())
    assert set(requested["properties"]["payload"]["required"]) >= {"run_id", "expires_at", "required_approvals"}


class OldStarted:
    class_version = 3

    @staticmethod
    def upcast_v1_v2(state):
        state["reason"] = state.pop("why", "unknown")

    @staticmethod
    def upcast_v2_v3(state):
        state["source"] = "v2"


def test_upcasters_bring_old_payloads_to_the_current_version_step_by_step():
    assert upcast(OldStarted, {"why": "retry"}, 1) == {"reason": "retry", "source": "v2"}
    assert upcast(OldStarted, {"reason": "x"}, 2) == {"reason": "x", "source": "v2"}
    assert upcast(OldStarted, {"reason": "x", "source": "new"}, 3) == {"reason": "x", "source": "new"}


def test_a_missing_upcaster_fails_loudly():
    class Broken:
        class_version = 2
    with pytest.raises(AttributeError):
        upcast(Broken, {}, 1)
