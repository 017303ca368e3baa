"""The contract fuzzer: schemathesis drives every operation /openapi.json documents against `runledger serve`.

It holds the server to what it publishes: no 5xx (`not_a_server_error`) but the two the contract
has (503 not_caught_up or read_model_held, 504 outcome_pending), no status the operation does not
document (`status_code_conformance`, so a 503 or 504 only where documented), documented content
types and headers, and bodies, SSE messages included, that match the documented schemas.

It runs schemathesis' own engine (what `schemathesis run` runs: examples, coverage and fuzzing
phases) in one test and reports every distinct failure at the end. Its pytest plugin is not used:
its fixture-loaded schemas (needed, as the server only exists once the `api` fixture has started it)
do not work with pytest 9.

Who calls: two tenants with every role, picked per request from the request's own content, so a
replayed example keeps its caller; one request in eight keeps whatever Authorization header
schemathesis generated from the bearer scheme, or none, so token parsing is fuzzed too. /v1/ops
routes get an admin token of the ops tenant.

Bounds, so the file runs in about a minute on two cores, and never much past BUDGET_S (a timer
stops the engine then, and the test fails, since operations went untested; schemathesis' own
max-time would not do: it keeps fuzzing until that time is up):
* at most MAX_EXAMPLES generated requests per operation, plus the schema's examples and the coverage
  phase's boundary values; no stateful phase;
* an SSE 200 never ends: the stream operations have a SSE_READ_S request timeout, which schemathesis
  treats as the end of the stream (it validates the messages read so far); as each 200 costs that
  long, they get at most STREAM_EXAMPLES generated requests, and only the coverage phase's invalid
  boundary values (those answer at once); a request whose headers take longer than that is sent
  once more before it counts as a failure (a busy machine, not a hang);
* `wait_ms` above WAIT_CAP_MS (or absent, the default being 2000, when `min_seq` is sent) is lowered
  to it: a `min_seq` ahead of the chain waits `wait_ms` before its 503, and the waiting itself is
  tested in test_queries.py; values outside 0..10000 are sent as they are;
* POST /v1/ops/projectors/{name}/rebuild is not fuzzed: a real name starts a rebuild; nor is
  POST /v1/ops/verifications: a valid body starts a verification of every tenant;
* commands are decided by the running processor, so a valid one answers in milliseconds.

Reproducing a failure: each one is reported with a curl command carrying the token it used (signed
with tests.support.SECRET and valid for an hour, so it replays against any `runledger serve` whose
RUNLEDGER_JWT_SECRET is that secret); the server's traceback is in the log named in the report,
/tmp/runledger-test-<topic prefix>-<port>.log.
"""
import threading
import zlib
from contextlib import contextmanager

import schemathesis
from schemathesis.engine import StopReason, events, from_schema

from tests.support import token, unique

MAX_EXAMPLES = 30
STREAM_EXAMPLES = 6
SSE_READ_S = 1.5
BUDGET_S = 150
WAIT_CAP_MS = 200
ROLES = ("operator", "admin", "auditor", "approver", "policy")
TENANT_TOKENS = [token(unique("fuzz"), "fuzzer", ROLES) for _ in range(2)]
OPS_TOKEN = token("ops", "fuzzer-ops", ("admin",))
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
CONFIG = {
    "continue-on-failure": True,
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS},
               "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}},
    "request-timeout": 30,
    "operations": [
        {"include-path-regex": "^/v1/streams/(tenant|approvals|runs/|multiplex)", "request-timeout": SSE_READ_S,
         "request-retries": 1, "generation": {"max-examples": STREAM_EXAMPLES},
         "phases": {"coverage": {"generation": {"mode": "negative"}}}},
        {"include-name": "POST /v1/ops/projectors/{name}/rebuild", "enabled": False},
        {"include-name": "POST /v1/ops/verifications", "enabled": False},
    ],
    "output": {"sanitization": {"enabled": False}},  # the curl commands carry the (test) tokens
}


def test_every_operation_keeps_the_contract(api):
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", config=schemathesis.Config.from_dict(CONFIG))
    schema.validate()  # a valid OpenAPI 3.1 document, or tools other than this one cannot read it
    with hook(before_call):
        failures, finished = run(schema)
    assert not failures, report(failures, api)
    assert finished.stop_reason == StopReason.COMPLETED, (
        f"the fuzzer stopped ({finished.stop_reason}) after {finished.running_time:.0f}s: "
        f"operations went untested; the server log is {api.log_path}")


def before_call(context, case, kwargs) -> None:
    """Send the request as one of the callers, and with a short wait for `min_seq`."""
    headers = case.headers if case.headers is not None else {}
    credentials = caller(case)
    if credentials:
        headers["Authorization"] = f"Bearer {credentials}"
    case.headers = headers
    query = case.query if case.query is not None else {}
    wait = str(query.get("wait_ms", 2000) if "min_seq" in query else query.get("wait_ms"))
    if wait.isascii() and wait.isdigit() and WAIT_CAP_MS < int(wait) <= 10000:  # (coverage sends strings)
        query["wait_ms"] = WAIT_CAP_MS
        case.query = query


def caller(case) -> str | None:
    if case.path.startswith("/v1/ops/"):
        return OPS_TOKEN
    pick = zlib.crc32(repr((case.method, case.path_parameters, case.query, case.body)).encode()) % 8
    return None if pick == 0 else TENANT_TOKENS[pick % 2]


@contextmanager
def hook(function):
    """before_call is a global schemathesis hook: registered for this test only."""
    schemathesis.hook(function)
    try:
        yield
    finally:
        schemathesis.hooks.unregister(function)


Failures = dict[tuple[str, str], list[str]]  # (operation, what failed) → the first such failure


def run(schema) -> tuple[Failures, events.EngineFinished]:
    """Run the engine until it is done or BUDGET_S has passed; return its distinct failures and how it finished."""
    stream = from_schema(schema).execute()
    deadline = threading.Timer(BUDGET_S, stream.stop)
    deadline.start()
    try:
        return collect(stream)
    finally:
        deadline.cancel()


def collect(stream) -> tuple[Failures, events.EngineFinished]:
    failures: Failures = {}
    for event in stream:
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            for check in (c for checks in event.recorder.checks.values() for c in checks if c.failure_info):
                found = check.failure_info.failure
                status = getattr(found, "status_code", "")
                failures.setdefault((event.recorder.label, f"{found.title} {status}".strip()), [
                    f"[{check.name}] {found.message.strip()}",
                    "Reproduce with:", f"    {check.failure_info.code_sample}"])
        elif isinstance(event, events.NonFatalError):  # e.g. a timeout; its text ends with a curl command
            failures.setdefault((event.label, type(event.value).__name__), [str(event.info)])
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            return failures, event
    raise AssertionError("the schemathesis engine ended without finishing")


def report(failures: Failures, api) -> str:
    lines = [f"{len(failures)} distinct contract failures; the server's tracebacks are in {api.log_path}"]
    for (operation, what), details in sorted(failures.items()):
        lines += ["", f"== {operation}: {what}", *details]
    return "\n".join(lines)
