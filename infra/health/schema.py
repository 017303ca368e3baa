"""What /livez, /readyz and /healthz answer, in the OpenAPI document (infra/adapters/http/openapi.py uses it)."""
from typing import Any

REF = "#/components/schemas/{model}"
HEALTH_PATHS = {"/livez": "Liveness", "/readyz": "Readiness", "/healthz": "Health"}
INVALID = "invalid_request: `detail` is not a boolean, or `role` is not api, processor or projectors"
HEALTH_STATUSES = {"/readyz": {"404": "not_found: this process does not run the role asked for", "422": INVALID},
                   "/healthz": {"422": INVALID}}
ANSWERS = {"/livez": ("every event loop of this process answers", "an event loop did not answer within the timeout"),
           "/readyz": ("the process (or the role asked for) serves, perhaps in part: `fails` says what does not",
                       "it serves nothing now (down), or has not started yet"),
           "/healthz": ("every role and part is ok or degraded",
                        "a role or part is down, failed, retrying or starting; the report says which and since when")}

STATUS = {"type": "string", "enum": ["ok", "degraded", "retrying", "failed", "down", "starting"]}
ENTRY = {"title": "HealthEntry", "type": "object", "required": ["status", "since"],
         "description": "a dependency or a part: its status and since when; with ops detail also `reason`, "
                        "`cause` (timeout, error, dependency, state), `needs`, `timeout_s`, `checked_at`",
         "properties": {"status": STATUS, "since": {"type": "string"}, "reason": {"type": "string"},
                        "cause": {"type": "string", "enum": ["timeout", "error", "dependency", "state"]}}}
ROLE = {"title": "HealthRole", "type": "object", "required": ["status", "since", "parts"],
        "properties": {"status": STATUS, "since": {"type": "string"},
                       "parts": {"type": "object", "additionalProperties": {"$ref": REF.format(model="HealthEntry")}}}}
READINESS_PROPERTIES = {
    "status": STATUS, "since": {"type": "string"}, "checked_at": {"type": "string"},
    "dependencies": {"type": "object", "additionalProperties": {"$ref": REF.format(model="HealthEntry")}},
    "roles": {"type": "object", "additionalProperties": {"$ref": REF.format(model="HealthRole")}},
    "works": {"type": "array", "items": {"type": "string"}}, "fails": {"type": "array", "items": {"type": "string"}},
}
REQUIRED = ["status", "since", "checked_at", "dependencies", "roles", "works", "fails"]
READINESS = {"title": "Readiness", "type": "object", "required": REQUIRED, "properties": READINESS_PROPERTIES,
             "description": "what this process's roles can serve now, part by part (docs/operations.md, Health)"}
HEALTH = {"title": "Health", "type": "object", "required": REQUIRED,
          "description": "everything /readyz says, and the long-standing keys: `api`, `processor` and "
                         "`projector:<name>` (a part's status), `owned_partitions`, the processor's counters",
          "properties": {**READINESS_PROPERTIES, "api": STATUS, "processor": STATUS,
                         "owned_partitions": {"type": "array", "items": {"type": "integer"}}}}
LIVENESS = {"title": "Liveness", "type": "object", "required": ["status", "loops", "timeout_s"],
            "properties": {"status": {"type": "string", "enum": ["ok", "down"]},
                           "loops": {"type": "object", "additionalProperties": {"type": "string", "enum": ["ok", "down"]}},
                           "timeout_s": {"type": "number"}}}
HEALTH_SCHEMAS = {"HealthEntry": ENTRY, "HealthRole": ROLE, "Readiness": READINESS, "Health": HEALTH,
                  "Liveness": LIVENESS}


def health_responses(path: str) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": REF.format(model=HEALTH_PATHS[path])}}}
    ok, not_ok = ANSWERS[path]
    return {"200": {"description": ok, "content": content}, "503": {"description": not_ok, "content": content}}
