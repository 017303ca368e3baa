"""The catalogue of event types: envelope `type` ⇄ aggregate event class, payloads and upcasting."""
import dataclasses
import functools
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.approval import Approval
from domain.budget import Budget
from domain.evidence import Export, ExportJob, TreeHeads
from domain.evidence import Verification
from domain.governance import LegalHold, Retention
from domain.policies import Policies
from domain.run import Run, RunDefaults
from domain.tool_call import ToolCall

AGGREGATES: dict[str, type[Aggregate]] = {
    "run": Run, "tool_call": ToolCall, "approval": Approval, "budget": Budget,
    "legal_hold": LegalHold, "retention": Retention, "checkpoint": TreeHeads, "export": Export,
    "export_job": ExportJob,
    "verification": Verification,
    "policy": Policies,
    "run_defaults": RunDefaults,
}
BASE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _event_classes(aggregate: type[Aggregate]) -> dict[str, type]:
    return {_snake(name): cls for name, cls in vars(aggregate).items()
            if isinstance(cls, type) and issubclass(cls, Aggregate.Event)
            and name not in ("Event", "Created")
            and cls.__qualname__.startswith(aggregate.__name__ + ".")}


EVENT_CLASSES: dict[str, type] = {
    f"{agg_type}.{name}": cls
    for agg_type, agg in AGGREGATES.items() for name, cls in _event_classes(agg).items()
}
EVENT_TYPES: dict[type, str] = {cls: name for name, cls in EVENT_CLASSES.items()}
AGGREGATE_TYPES: dict[type, str] = {agg: name for name, agg in AGGREGATES.items()}


class UnknownEventType(Exception):
    pass


@functools.cache
def payload_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.name not in BASE_FIELDS)


def payload_of(event: Any) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in payload_fields(type(event))}


def schema_version_of(cls: type) -> int:
    return getattr(cls, "class_version", 1)


def upcast(cls: type, payload: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring an old payload up to the class's current version, one step at a time."""
    state = dict(payload)
    while version < schema_version_of(cls):
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    return state


def to_domain_event(env: dict[str, Any]) -> Any:
    """Rebuild the aggregate event an envelope records."""
    cls = EVENT_CLASSES.get(env["type"])
    if cls is None:
        raise UnknownEventType(f"unknown event type {env['type']!r} at chain_seq {env['chain_seq']}")
    kwargs = upcast(cls, env["payload"], env["schema_version"])
    if issubclass(cls, Aggregate.Created):
        agg = AGGREGATES[env["aggregate_type"]]
        kwargs["originator_topic"] = f"{agg.__module__}:{agg.__qualname__}"
    return cls(originator_id=UUID(env["aggregate_id"]),
               originator_version=env["aggregate_version"],
               timestamp=datetime.fromisoformat(env["occurred_at"].replace("Z", "+00:00")),
               **kwargs)


__all__ = ["AGGREGATES", "EVENT_CLASSES", "EVENT_TYPES", "AGGREGATE_TYPES", "UnknownEventType",
           "payload_of", "payload_fields", "schema_version_of", "to_domain_event"]
