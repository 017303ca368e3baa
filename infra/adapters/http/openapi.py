"""Document every status a route can answer, beside what FastAPI generates on its own.

FastAPI knows a route's success status and its own 422 only. The refusals (`Refused`, the intake's
and the processor's domain rejections, `AuthError`, `NotCaughtUp`, `TenantHeld`, `BadCursor`, and the
app-wide guard's invalid_parameter) are raised inside dependencies and routes and turned into
responses by the handlers in `infra/adapters/http/errors.py`, so they are
listed here per kind of route, all with the one body they share (`Rejection`). A contract fuzzer
(`tests/e2e/test_contract_fuzz.py`) holds the server to it: a status or a body this schema does not
document fails it.
"""
from typing import Any

from pydantic import TypeAdapter

from infra.adapters.http.openapi_streams import (CHANNEL_MESSAGE, MULTIPLEX_MESSAGE, MULTIPLEX_NOTICE, REF,
                                              STREAM_NOTICE, SUBSCRIBED)
from infra.health.schema import HEALTH_PATHS, HEALTH_SCHEMAS, HEALTH_STATUSES, health_responses
from schemas.envelope import Envelope

# The intake's rule (`commands.intake.IDEMPOTENCY_KEY`) in JSON Schema terms; the property tests
# check that the two agree.
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"
LAST_EVENT_ID = r"^[0-9]{1,18}$"
# A multiplexed stream's resume point: one position (or nothing: live only) per channel, joined by dots.
POSITIONS = r"^[0-9]{0,18}(\.[0-9]{0,18}){0,7}$"
MULTIPLEX = "/v1/streams/multiplex"
BATCH = "/v1/commands/batch"  # its 200 and its request body: commands/api/batch_docs.py
PUBLIC = ("/healthz", "/livez", "/readyz", "/v1/streams/viewer")  # no token

UNAUTHORIZED = ("missing_token, invalid_token, token_expired: no bearer token, or one that does "
                "not verify, has expired or lacks a valid tenant, subject or roles")
FORBIDDEN = "missing_role: the token lacks every role this route admits"
INVALID_REQUEST = "invalid_request: a parameter does not have the documented type or range"
# infra/adapters/http/guard.py refuses these on every route, before the route's own checks.
INVALID_PARAMETER = "invalid_parameter: a path or query parameter, name or value, has text no store can keep"
UNAVAILABLE = ("not_caught_up: the read model has not applied the tenant's chain up to `min_seq` within "
               "`wait_ms`; `details` says how far it has got; retry after `Retry-After` seconds. "
               "read_model_held: an event of this tenant could not be applied there, and it is held before it")

LOG_UNAVAILABLE = ("log_unavailable: the event log cannot take commands now (the broker is down, or did not "
                   "confirm the command within RUNLEDGER_DELIVERY_TIMEOUT_S); `details.sent` says whether it was "
                   "produced (then it may still be recorded); retry after `Retry-After` seconds with the same "
                   "Idempotency-Key, which makes the retry exact")
COMMAND_STATUSES = {
    "400": ("malformed_json, duplicate_key, too_deeply_nested, invalid_content_length: the body is not "
            "JSON, repeats a member name or nests too deep, or Content-Length is not a number; "
            + INVALID_PARAMETER),
    "401": UNAUTHORIZED,
    "403": ("missing_role, system_command: the token lacks the command's role, or the type is one "
            "only runledger issues; forbidden: e.g. the requester deciding their own approval"),
    "404": "not_found: the command names a run, tool call or approval this tenant does not have",
    "409": ("invalid_state, version_conflict, budget_exceeded: the aggregate's state, its version "
            "(`expected_version`) or a budget refuses the command"),
    "413": "body_too_large: the body exceeds RUNLEDGER_MAX_BODY_BYTES",
    "422": ("invalid_command, unknown_command_type, invalid_text, invalid_idempotency_key, "
            "idempotency_key_reused: the command is not valid, has text no store can keep, or its "
            "Idempotency-Key is malformed or was used for another body; invalid_occurred_at, "
            "occurred_at_in_future, occurred_at_too_old: `occurred_at` is no RFC 3339 instant with an "
            "offset, or is further ahead of runledger's clock than RUNLEDGER_CLOCK_SKEW_S or further back "
            "than RUNLEDGER_CLIENT_TIME_HORIZON_S"),
    "503": LOG_UNAVAILABLE,
    "504": ("outcome_pending: the log holds the command but no outcome arrived within "
            "RUNLEDGER_COMMAND_TIMEOUT_S; retry with the same Idempotency-Key to get it"),
}
BATCH_STATUSES = {  # the request's own refusals; each command's are in its outcome, in the 200
    "400": ("malformed_batch: the body cannot be split into commands (not UTF-8, not a JSON array, a string or "
            "an array never closed); invalid_content_length; " + INVALID_PARAMETER),
    "401": UNAUTHORIZED,
    "413": ("body_too_large: the body exceeds RUNLEDGER_MAX_BATCH_BYTES; too_many_commands: it has more "
            "commands than RUNLEDGER_BATCH_MAX"),
    "415": "unsupported_media_type: Content-Type is neither application/json nor application/x-ndjson",
    "422": ("empty_batch: the batch has no commands; idempotency_key_per_item: an Idempotency-Key header "
            "(each command gives its own `idempotency_key`)"),
    "503": LOG_UNAVAILABLE.replace("Idempotency-Key", "idempotency_key for each command"),
}
QUERY_STATUSES = {
    "400": "invalid_cursor: a cursor this API did not issue; " + INVALID_PARAMETER,
    "401": UNAUTHORIZED,
    "403": FORBIDDEN,
    "404": "not_found: no such id in this tenant (another tenant's ids answer the same)",
    "422": INVALID_REQUEST,
    "503": UNAVAILABLE,
}
STREAM_STATUSES = {
    "400": ("invalid_last_event_id: Last-Event-ID (or `last_event_id`) is not a channel position; "
            "invalid_channel: (multiplex) a channel this API does not have, or one asked for twice; "
            + INVALID_PARAMETER),
    "401": UNAUTHORIZED,
    "403": FORBIDDEN,
    "404": "not_found: no such stream in this tenant",
    "422": INVALID_REQUEST,
    "503": UNAVAILABLE,
}
OPS_STATUSES = {
    "400": INVALID_PARAMETER,
    "401": UNAUTHORIZED,
    "403": "ops_only: platform views need an admin token of the operations tenant",
    "404": ("not_found, not_held: no projector of that name, no rebuild of it has run in this process, "
            "or the tenant is not held there"),
    "409": "rebuild_running: a rebuild of this read model is already running",
    "422": INVALID_REQUEST,
}


def document_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the responses, headers and security every operation really has to a generated schema."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(shared_schemas())
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            document_operation(method, path, operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    return schema


def document_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    responses.update({status: rejection(status, text) for status, text in statuses_of(method, path).items()})
    if path in HEALTH_PATHS:
        responses.update(health_responses(path))
    elif path == "/v1/commands":
        responses["200"] = accepted()
    elif path == MULTIPLEX:
        responses["200"] = event_stream("MultiplexMessage")
    elif path.startswith("/v1/streams/") and path not in PUBLIC:
        responses["200"] = event_stream()
    if path not in PUBLIC:
        operation["security"] = [{"bearer": []}]
    constrain_headers(operation.get("parameters", []), multiplexed=path == MULTIPLEX)
    operation["responses"] = dict(sorted(responses.items()))


def statuses_of(method: str, path: str) -> dict[str, str]:
    """The refusals a route can answer: by kind, then what its own handler raises."""
    if path in PUBLIC:
        return {"400": INVALID_PARAMETER, **HEALTH_STATUSES.get(path, {})}
    if path == "/v1/commands":
        return COMMAND_STATUSES
    if path == BATCH:
        return BATCH_STATUSES
    if path.startswith("/v1/streams/"):
        return STREAM_STATUSES
    if path.startswith("/v1/ops/"):
        raised = {"400", "401", "403"} | ({"404", "422"} if "{name}" in path else set())
        raised |= {"409"} if method == "post" and path.endswith("/rebuild") else set()
        return {status: OPS_STATUSES[status] for status in sorted(raised)}
    return {status: text for status, text in QUERY_STATUSES.items() if status != "404" or "{" in path}


def rejection(status: str, description: str) -> dict[str, Any]:
    schema = "Unavailable" if status == "503" and not description.startswith("log_unavailable") else "Rejection"
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}}
    if status == "401":
        response["headers"] = {"WWW-Authenticate": header("Bearer", {"const": "Bearer"})}
    if status == "503":
        response["headers"] = {"Retry-After": header("with not_caught_up and log_unavailable: seconds to wait "
                                                     "before retrying", {"pattern": "^[0-9]+$"}, required=False)}
    return response


def header(description: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "string", **schema}}


def accepted() -> dict[str, Any]:
    replayed = header("`true` when this is the first outcome of an earlier request with the same Idempotency-Key",
                      {"enum": ["true"]}, required=False)
    return {"description": "accepted: the command's events are on the ledger",
            "headers": {"Idempotent-Replayed": replayed},
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Accepted")}}}}


def event_stream(model: str = "ChannelMessage") -> dict[str, Any]:
    # `schema` describes each message, as tools read it before OpenAPI 3.2; 3.2's `itemSchema`
    # (which FastAPI writes for its own SSE routes) is not valid in the 3.1 document served here.
    return {"description": "the channel's events after Last-Event-ID, then the live tail (never ends); "
                           "the schema describes each message",
            "content": {"text/event-stream": {"schema": {"$ref": REF.format(model=model)}}}}


def constrain_headers(parameters: list[dict[str, Any]], multiplexed: bool = False) -> None:
    """Replace FastAPI's `string | null` with the rule each header and resume point is checked against."""
    rules = {("header", "idempotency-key"): (IDEMPOTENCY_KEY, 200, "1-200 printable ASCII characters, no spaces"),
             ("header", "last-event-id"): (LAST_EVENT_ID, 18, "the last channel position seen: ASCII digits"),
             ("query", "last_event_id"): (LAST_EVENT_ID, 18, "resume after this channel position "
                                                             "(first connection)")}
    if multiplexed:
        rules.update({("header", "last-event-id"): (POSITIONS, 151, "the id of the last message seen: each "
                                                                     "channel's position, joined by '.'"),
                      ("query", "last_event_id"): (POSITIONS, 151, "resume after these positions, one per "
                                                                   "channel, joined by '.' (first connection)")})
    for parameter in parameters:
        rule = rules.get((parameter["in"], parameter["name"].lower()))
        if rule:
            pattern, longest, description = rule
            parameter["description"] = description
            parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": longest, "pattern": pattern}


def shared_schemas() -> dict[str, Any]:
    envelope = TypeAdapter(Envelope).json_schema(ref_template=REF)
    return {**envelope.pop("$defs", {}), "Envelope": envelope, "Rejection": REJECTION,
            "FieldProblem": FIELD_PROBLEM, "Unavailable": UNAVAILABLE_BODY, "NotCaughtUp": NOT_CAUGHT_UP_BODY,
            "ReadModelHeld": READ_MODEL_HELD, "Accepted": ACCEPTED,
            "EventSummary": EVENT_SUMMARY, "ChannelMessage": CHANNEL_MESSAGE, "StreamNotice": STREAM_NOTICE,
            "MultiplexMessage": MULTIPLEX_MESSAGE, "Subscribed": SUBSCRIBED, "MultiplexNotice": MULTIPLEX_NOTICE,
            **HEALTH_SCHEMAS}


FIELD_PROBLEM = {"title": "FieldProblem", "type": "object", "required": ["field", "problem"],
                 "properties": {"field": {"type": "string"}, "problem": {"type": "string"}}}
REJECTION = {
    "title": "Rejection", "type": "object", "required": ["status", "code", "reason"],
    "description": "Every refusal: a machine-readable code and a reason for people.",
    "properties": {
        "status": {"type": "string", "const": "rejected"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "reason": {"type": "string", "minLength": 1},
        "details": {"description": "what exactly is wrong: one entry per field, or the state that refused",
                    "anyOf": [{"type": "array", "items": {"$ref": REF.format(model="FieldProblem")}},
                              {"type": "object"}]},
        "command_id": {"type": "string"},
        "replayed": {"type": "boolean"},
    },
}
NOT_CAUGHT_UP_BODY = {
    "title": "NotCaughtUp",
    "allOf": [{"$ref": REF.format(model="Rejection")}, {
        "type": "object", "required": ["details"],
        "properties": {"code": {"const": "not_caught_up"}, "details": {
            "type": "object", "required": ["read_model", "wanted_seq", "applied_seq"],
            "properties": {"read_model": {"type": "string"}, "wanted_seq": {"type": "integer", "minimum": 1},
                           "applied_seq": {"type": "integer", "minimum": 0}}}}}],
}
READ_MODEL_HELD = {
    "title": "ReadModelHeld",
    "allOf": [{"$ref": REF.format(model="Rejection")}, {
        "type": "object", "required": ["details"],
        "properties": {"code": {"const": "read_model_held"}, "details": {
            "type": "object", "required": ["read_model", "held_before_seq"],
            "properties": {"read_model": {"type": "string"}, "held_before_seq": {"type": "integer", "minimum": 1},
                           "held_since": {"type": "string"}}}}}],
}
UNAVAILABLE_BODY = {"title": "Unavailable", "oneOf": [{"$ref": REF.format(model="NotCaughtUp")},
                                                      {"$ref": REF.format(model="ReadModelHeld")}]}
HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
EVENT_SUMMARY = {
    "title": "EventSummary", "type": "object",
    "required": ["chain_seq", "hash", "type", "event_id", "aggregate_id", "aggregate_version"],
    "properties": {"chain_seq": {"type": "integer", "minimum": 1}, "hash": HASH, "type": {"type": "string"},
                   "event_id": {"type": "string"}, "aggregate_id": {"type": "string"},
                   "aggregate_version": {"type": "integer", "minimum": 1}},
}
ACCEPTED = {
    "title": "Accepted", "type": "object", "required": ["status", "command_id", "events"],
    "properties": {
        "status": {"type": "string", "const": "accepted"},
        "command_id": {"type": "string"},
        "original_command_id": {"type": "string", "description": "the request first answered with this outcome"},
        "aggregate_id": {"type": "string"},
        "aggregate_version": {"type": "integer", "minimum": 0},
        "replayed": {"type": "boolean"},
        "events": {"type": "array", "items": {"$ref": REF.format(model="EventSummary")}},
    },
}
