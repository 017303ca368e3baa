"""Export JSON Schema for the envelope, every event payload version and every command.

`python -m schemas.export` rewrites schemas/json/; a test fails when the files drift.
"""
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, create_model

from domain.commands import AnyCommand
from domain.registry import EVENT_CLASSES, payload_fields, schema_version_of
from schemas.envelope import Envelope

OUT = Path(__file__).parent / "json"


def payload_model(event_type: str, cls: type):
    fields = {f.name: (f.type, ...) for f in payload_fields(cls)}
    name = "".join(part.title() for part in event_type.replace(".", "_").split("_")) + "Payload"
    return create_model(name, __config__={"extra": "forbid"}, **fields)


def event_schema(event_type: str, cls: type) -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    version = schema_version_of(cls)
    schema["title"] = f"{event_type} v{version}"
    schema["$id"] = f"urn:runledger:event:{event_type}:v{version}"
    schema["properties"]["type"] = {"const": event_type, "type": "string"}
    schema["properties"]["schema_version"] = {"const": version, "type": "integer"}
    schema["properties"]["payload"] = payload_model(event_type, cls).model_json_schema()
    return schema


def documents() -> dict[str, dict[str, Any]]:
    docs = {"envelope.json": Envelope.model_json_schema(),
            "commands.json": TypeAdapter(AnyCommand).json_schema()}
    for event_type, cls in sorted(EVENT_CLASSES.items()):
        docs[f"events/{event_type}.v{schema_version_of(cls)}.json"] = event_schema(event_type, cls)
    return docs


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    for name, doc in documents().items():
        path = OUT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(doc))
    print(f"wrote {len(documents())} schemas to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
