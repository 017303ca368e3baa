"""Domain rejections carry a code and no status; the HTTP adapter's one table gives each its status.

Every code the domain and the intake raise is found in their source, so a new code whose class is
not a 409 fails here until `infra/adapters/http/errors.py` lists it: a processor's reply has only
its code, and an unlisted code answers 409.
"""
import ast
import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from commands.api.routes_commands import outcome_response
from domain import errors
from domain.errors import DomainError, Forbidden, InvalidCommand, InvalidState, Malformed, NotFound
from infra.adapters.http.errors import Refused, install_error_handlers, status_of, status_of_code

ROOT = Path(__file__).resolve().parents[2]
KINDS = {name: kind for name, kind in vars(errors).items() if isinstance(kind, type) and issubclass(kind, DomainError)}
# What each class answered before rejections lost their http_status; every other class 409.
STATUS_OF_KIND = {NotFound: 404, Forbidden: 403, InvalidCommand: 422, Malformed: 400}


def expected_status(kind: type[DomainError]) -> int:
    return next((STATUS_OF_KIND[k] for k in kind.__mro__ if k in STATUS_OF_KIND), 409)


def raised_codes() -> set[tuple[str, str, str]]:
    """(where, class name, code) of every `raise Kind(reason, code)` (or `return Kind(...)`) in domain/ and the intake."""
    found = set()
    for path in sorted((ROOT / "domain").glob("*.py")) + [ROOT / "commands" / "intake.py"]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            call = node.exc if isinstance(node, ast.Raise) else node.value if isinstance(node, ast.Return) else None
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in KINDS):
                continue
            given = list(call.args[1:2]) + [k.value for k in call.keywords if k.arg == "code"]
            code = next((a.value for a in given if isinstance(a, ast.Constant) and a.value), KINDS[call.func.id].code)
            found.add((str(path.relative_to(ROOT)), call.func.id, code))
    return found


CODES = sorted(raised_codes())


def test_the_scan_finds_the_codes_it_is_meant_to():
    codes = {code for _, _, code in CODES}
    assert {"duplicate_key", "too_deeply_nested", "malformed_json", "system_command", "missing_role",
            "invalid_text", "unknown_command_type", "invalid_idempotency_key", "unknown_step", "duplicate_step",
            "requester_cannot_approve", "already_approved", "not_found", "version_conflict"} <= codes


@pytest.mark.parametrize("where,kind,code", CODES)
def test_every_raised_code_answers_the_status_of_its_class(where, kind, code):
    # As an exception (the intake), and as a processor's reply that has only the code
    error = KINDS[kind]("why", code)
    assert (status_of(error), status_of_code(code)) == (expected_status(KINDS[kind]),) * 2, where


def test_a_code_not_listed_answers_its_class_s_status_or_409():
    assert (status_of_code("undecidable"), status_of_code("idempotency_key_reused"), status_of_code("rejected"),
            status_of_code("invalid_state"), status_of_code("no_such_code")) == (500, 422, 409, 409, 409)
    assert (status_of_code("no_such_code", Forbidden), status_of_code("no_such_code", InvalidCommand),
            status_of_code("no_such_code", NotFound), status_of_code("no_such_code", Malformed)) == (403, 422, 404, 400)


def reply(**fields) -> dict:
    return {"command_id": "c-2", "tenant_id": "acme", "idempotency_key": "k", "request_digest": "d",
            "status": "rejected", "replayed": False, **fields}


@pytest.mark.parametrize("code,status", [("not_found", 404), ("missing_role", 403), ("idempotency_key_reused", 422),
                                         ("unknown_step", 422), ("duplicate_step", 409), ("budget_exceeded", 409),
                                         ("undecidable", 500)])
def test_a_rejected_reply_answers_the_status_of_its_code(code, status):
    response = outcome_response(reply(code=code, reason="why"))
    assert (response.status_code, json.loads(response.body)) == (status, {
        "command_id": "c-2", "status": "rejected", "replayed": False, "code": code, "reason": "why"})


def test_an_older_reply_s_http_status_is_ignored_and_not_shown():
    # A reply recorded by an older version, replayed for a repeated Idempotency-Key
    old = reply(code="not_found", reason="no run r", http_status=418, replayed=True, original_command_id="c-1")
    response = outcome_response(old)
    assert (response.status_code, response.headers["Idempotent-Replayed"], json.loads(response.body)) == (404, "true", {
        "command_id": "c-2", "status": "rejected", "replayed": True, "original_command_id": "c-1",
        "code": "not_found", "reason": "no run r"})


def test_an_accepted_reply_is_a_200_without_the_private_fields():
    response = outcome_response(reply(status="accepted", aggregate_id="a", aggregate_version=1, events=[]))
    assert (response.status_code, json.loads(response.body)) == (200, {
        "command_id": "c-2", "status": "accepted", "replayed": False, "aggregate_id": "a", "aggregate_version": 1,
        "events": []})


def raising(error: Exception):
    async def route() -> None:
        raise error
    return route


def test_a_domain_error_raised_in_a_route_is_answered_as_a_refusal():
    app = FastAPI()
    install_error_handlers(app)
    raised = {"/invalid": InvalidCommand("kind: wrong", details=[{"field": "kind", "problem": "wrong"}]),
              "/malformed": Malformed("the body repeats the key 'a'", "duplicate_key"),
              "/role": Forbidden("SetBudget needs one of the roles ['admin']", "missing_role"),
              "/state": InvalidState("run r is completed"),
              "/refused": Refused(413, "body_too_large", "too big")}
    for path, error in raised.items():
        app.add_api_route(path, raising(error))
    with TestClient(app) as client:
        answers = {path: (r.status_code, r.json()) for path in raised for r in [client.get(path)]}
    assert answers == {
        "/invalid": (422, {"status": "rejected", "code": "invalid_command", "reason": "kind: wrong",
                           "details": [{"field": "kind", "problem": "wrong"}]}),
        "/malformed": (400, {"status": "rejected", "code": "duplicate_key", "reason": "the body repeats the key 'a'"}),
        "/role": (403, {"status": "rejected", "code": "missing_role",
                        "reason": "SetBudget needs one of the roles ['admin']"}),
        "/state": (409, {"status": "rejected", "code": "invalid_state", "reason": "run r is completed"}),
        "/refused": (413, {"status": "rejected", "code": "body_too_large", "reason": "too big"}),
    }


def test_the_frameworks_own_refusals_come_in_the_rejection_shape_too():
    app = FastAPI()
    install_error_handlers(app)

    async def takes_json(body: dict) -> dict:
        return body
    app.add_api_route("/json", takes_json, methods=["POST"])
    with TestClient(app) as client:
        unparsable = client.post("/json", content=b"\txZ\xc9", headers={"content-type": "application/json"})
        nowhere, wrong_method = client.get("/nowhere"), client.get("/json")
    assert (unparsable.status_code, unparsable.json()) == (400, {
        "status": "rejected", "code": "invalid_json",
        "reason": "the request body is not valid JSON (There was an error parsing the body)"})
    assert (nowhere.status_code, nowhere.json()) == (404, {"status": "rejected", "code": "not_found",
                                                           "reason": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json(), wrong_method.headers["allow"]) == (
        405, {"status": "rejected", "code": "method_not_allowed", "reason": "Method Not Allowed"}, "POST")
