"""Tokens and request bodies are refused with specific reasons."""
import base64
import json
import time

import jwt
import pytest

from infra.adapters.http.auth import AuthError, Principal, authenticate, mint
from commands.intake import command_envelope
from domain.errors import DomainError
from infra.adapters.http.errors import status_of

SECRET = "s" * 40
OPERATOR = Principal("acme", "bot", ("operator",))


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_names_tenant_subject_and_roles():
    principal = authenticate(mint(SECRET, "acme", "ann", ["approver", "operator"]), SECRET, "runledger")
    assert principal == Principal("acme", "ann", ("approver", "operator"))


@pytest.mark.parametrize("token,code,fragment", [
    (mint(SECRET, "acme", "a", ["operator"], ttl_s=-10), "token_expired", "expired"),
    (mint("x" * 40, "acme", "a", ["operator"]), "invalid_token", "signature"),
    ("not-a-jwt", "invalid_token", "cannot be read"),
    (b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "a", "tenant_id": "acme", "roles": ["admin"],
                                                     "aud": "runledger", "exp": int(time.time()) + 60}) + ".",
     "invalid_token", "algorithm"),
    (mint(SECRET, "acme", "a", ["operator"], audience="elsewhere"), "invalid_token", "audience"),
    (jwt.encode({"sub": "a", "roles": ["operator"], "aud": "runledger", "exp": int(time.time()) + 60},
                SECRET, algorithm="HS256"), "invalid_token", "tenant_id"),
    (mint(SECRET, "acme", "a", ["system"]), "invalid_token", "roles"),
    (mint(SECRET, "ACME!", "a", ["operator"]), "invalid_token", "tenant"),
    (jwt.encode({"sub": "a", "tenant_id": "acme", "roles": ["admin"], "aud": "runledger",
                 "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"), "invalid_token", "algorithm"),
])
def test_bad_tokens_are_refused_with_a_reason(token, code, fragment):
    with pytest.raises(AuthError) as error:
        authenticate(token, SECRET, "runledger")
    assert error.value.code == code and fragment in error.value.reason


@pytest.mark.parametrize("raw,status,code", [
    (b"{not json", 400, "malformed_json"),
    (b"[1,2]", 422, "invalid_command"),
    (b'{"type":"LaunchMissiles"}', 422, "unknown_command_type"),
    (b'{"agent_id":"a"}', 422, "unknown_command_type"),
    (b'{"type":"ExpireApproval","approval_id":"01a20000-0000-7000-8000-000000000001"}', 403, "system_command"),
    (b'{"type":"RequestRun","agent_id":17}', 422, "invalid_command"),
    (b'{"type":"RequestRun","agent_id":"a","extra":1}', 422, "invalid_command"),
    (b'{"type":"StartRun","run_id":"not-a-uuid"}', 422, "invalid_command"),
    (b'{"type":"RecordCost","provider":"p","model":"m","amount_micros":-1,"currency":"USD"}', 422, "invalid_command"),
    (b'{"type":"RequestRun","agent_id":"a","expected_version":"3"}', 422, "invalid_command"),
    (b'{"type":"SetBudget","project":"p","period":"day","limit_micros":1,"currency":"USD"}', 403, "missing_role"),
])
def test_bad_bodies_are_refused_specifically(raw, status, code):
    with pytest.raises(DomainError) as error:
        command_envelope(OPERATOR, raw, None, None, None)
    assert (status_of(error.value), error.value.code) == (status, code)


def test_field_errors_name_the_field():
    with pytest.raises(DomainError) as error:
        command_envelope(OPERATOR, b'{"type":"StartStep","run_id":"01a20000-0000-7000-8000-000000000001","kind":"dance","name":"x"}', None, None, None)
    assert error.value.details[0]["field"] == "kind" and "kind" in error.value.reason


def test_bad_idempotency_key_is_refused():
    with pytest.raises(DomainError) as error:
        command_envelope(OPERATOR, b'{"type":"RequestRun","agent_id":"a"}', "has space", None, None)
    assert error.value.code == "invalid_idempotency_key"


def test_the_digest_ignores_formatting_but_not_content():
    a = command_envelope(OPERATOR, b'{"type":"RequestRun","agent_id":"a"}', "k", None, None)
    b = command_envelope(OPERATOR, b'{ "agent_id" : "a", "type" : "RequestRun" }', "k", None, None)
    c = command_envelope(OPERATOR, b'{"type":"RequestRun","agent_id":"b"}', "k", None, None)
    assert a["request_digest"] == b["request_digest"] != c["request_digest"]
    assert (a["tenant_id"], a["idempotency_key"], a["actor"]) == ("acme", "k", {"subject": "bot", "roles": ["operator"]})
