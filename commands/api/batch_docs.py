"""What POST /v1/commands/batch takes and answers, in OpenAPI terms (its refusals are in openapi.py)."""
from commands.batch import NDJSON
from commands.intake import CLIENT_TYPES, IDEMPOTENCY_KEY, MAX_DEPTH
from domain.client_time import RFC3339
from domain.fields import MAX_SAFE_INTEGER

REF = "#/components/schemas/{model}"
ITEM = {
    "type": "object", "required": ["type", "idempotency_key"], "additionalProperties": True,
    "description": "a command as POST /v1/commands takes it (AnyCommand), with its own `idempotency_key`; "
                   f"held to the same rules (RUNLEDGER_MAX_BODY_BYTES, {MAX_DEPTH} levels, no repeated member)",
    "properties": {
        "type": {"type": "string", "enum": CLIENT_TYPES},
        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200,
                            "pattern": f"^{IDEMPOTENCY_KEY.pattern}$",
                            "description": "this command's own key: the batch sent again returns each first outcome"},
        "expected_version": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER},
        "occurred_at": {"type": "string", "pattern": f"^{RFC3339.pattern}$",
                        "description": "when the work happened, by the client's clock (RFC 3339 with an offset)"},
    },
}
EXAMPLE = [{"type": "RequestRun", "idempotency_key": "run-42", "agent_id": "support-bot", "project": "helpdesk",
            "run_id": "0196a6f4-7c1e-7000-8000-000000000042", "occurred_at": "2026-05-01T12:00:00.250+02:00"},
           {"type": "StartRun", "idempotency_key": "run-42-start", "run_id": "0196a6f4-7c1e-7000-8000-000000000042"}]
INDEXED = {"index": {"type": "integer", "minimum": 0, "description": "the command's position in the batch, from 0"},
           "idempotency_key": {"type": "string"}}
ACCEPTED_ITEM = {"allOf": [{"$ref": REF.format(model="Accepted")},
                           {"type": "object", "required": ["index"], "properties": INDEXED}]}
REJECTED_ITEM = {"allOf": [{"$ref": REF.format(model="Rejection")},
                           {"type": "object", "required": ["index"],
                            "properties": {**INDEXED, "original_command_id": {"type": "string"}}}]}
PENDING_ITEM = {"type": "object", "required": ["index", "status", "code", "reason", "command_id"],
                "properties": {**INDEXED, "status": {"const": "pending"}, "code": {"enum": ["outcome_pending", "log_unavailable"]},
                               "reason": {"type": "string", "minLength": 1}, "command_id": {"type": "string"}}}
COUNT = {"type": "integer", "minimum": 0}
OUTCOME = {"title": "BatchOutcome", "type": "object", "required": ["accepted", "rejected", "pending", "items"],
           "properties": {"accepted": COUNT, "rejected": COUNT, "pending": COUNT,
                          "items": {"type": "array", "items": {"oneOf": [ACCEPTED_ITEM, REJECTED_ITEM, PENDING_ITEM]}}}}


BATCH_REQUEST = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "minItems": 1, "items": ITEM,
                                        "description": "at most RUNLEDGER_BATCH_MAX commands (default 1,000)"},
                             "example": EXAMPLE},
        NDJSON: {"schema": {"type": "string", "description": "one command (as in the array) per line"}}}},
    "responses": {"200": {"description": "each command's outcome, in request order: accepted, rejected, or "
                                         "pending (no outcome in time, or not confirmed by the log: send the batch again)",
                          "content": {"application/json": {"schema": OUTCOME}}}},
}
