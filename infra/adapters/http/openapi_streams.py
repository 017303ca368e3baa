"""The OpenAPI schemas of the SSE streams: a channel's messages and a multiplexed stream's (openapi.py uses them)."""
from typing import Any

REF = "#/components/schemas/{model}"
NOTICES = ["replay_incomplete", "overflow"]


STREAM_NOTICE = {"title": "StreamNotice", "type": "object", "required": ["reason"],
                 "properties": {"reason": {"type": "string"}, "requested_after": {"type": "integer"},
                                "resumes_after": {"type": "integer"}, "resume_after": {"type": "integer"}}}


def json_data(model: str) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"$ref": REF.format(model=model)}}


CHANNEL_MESSAGE = {
    "title": "ChannelMessage",
    "description": "One SSE message: an event of the channel (`id` is its position, `data` the envelope), "
                   "or a notice (replay_incomplete, overflow)",
    "anyOf": [
        {"type": "object", "required": ["event", "id", "data"],
         "properties": {"event": {"type": "string", "not": {"enum": NOTICES}},
                        "id": {"type": "string", "pattern": "^[0-9]+$"}, "data": json_data("Envelope")}},
        {"type": "object", "required": ["event", "data"],
         "properties": {"event": {"type": "string", "enum": NOTICES}, "data": json_data("StreamNotice")}},
    ],
}
POSITIONS_ID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$"}
MULTIPLEX_MESSAGE = {
    "title": "MultiplexMessage",
    "description": "One SSE message of a multiplexed stream: an event (`event` its channel, `id` every channel's "
                   "position after it, `data` the envelope), `subscribed` first, or a notice naming its channel",
    "anyOf": [
        {"type": "object", "required": ["event", "id", "data"],
         "properties": {"event": {"type": "string", "pattern": "^(tenant|approvals|runs/[0-9a-f-]{36})$"},
                        "id": POSITIONS_ID, "data": json_data("Envelope")}},
        {"type": "object", "required": ["event", "id", "data"],
         "properties": {"event": {"const": "subscribed"}, "id": POSITIONS_ID, "data": json_data("Subscribed")}},
        {"type": "object", "required": ["event", "data"],
         "properties": {"event": {"type": "string", "enum": NOTICES}, "data": json_data("MultiplexNotice")}},
    ],
}
SUBSCRIBED = {"title": "Subscribed", "type": "object", "required": ["channels", "positions", "chain_seq"],
              "properties": {"channels": {"type": "array", "items": {"type": "string"}},
                             "positions": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                             "chain_seq": {"type": "integer", "minimum": 0}}}
MULTIPLEX_NOTICE = {"title": "MultiplexNotice", "type": "object", "required": ["channel", "reason"],
                    "properties": {"channel": {"type": "string"}, "reason": {"type": "string"},
                                   "requested_after": {"type": "integer"}, "resumes_after": {"type": "integer"},
                                   "resume_after": POSITIONS_ID}}
