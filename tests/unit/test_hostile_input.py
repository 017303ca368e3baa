"""Hostile input gets a specific 4xx before anything is written: bodies, tokens, cursors, parameters."""
import base64
import json
import time
from datetime import datetime, timezone
from uuid import UUID, uuid4

import jwt
import pytest
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request

from infra.adapters.http.guard import refuse_unstorable_parameters
from commands.api.routes_commands import check_declared_length
from infra.adapters.http.auth import AuthError, Principal, authenticate
from commands.intake import command_envelope
from domain.errors import DomainError
from infra.adapters.http.errors import Refused, status_of
from domain.ledger import COMMAND
from domain.text import escaped, unstorable
from infra.adapters.http.deps import Instant
from queries.pagination import CHAIN_SEQ, INSTANT_AND_ID, BadCursor, decode_cursor, encode_cursor
from streams.routes import resume_point

SECRET = "s" * 40
ADMIN = Principal("acme", "bot", ("admin", "operator"))
RUN = "01a20000-0000-7000-8000-000000000001"


def refused(body: bytes | dict) -> DomainError:
    """The intake's refusal of a body; its status is the one the HTTP adapter gives its code."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(DomainError) as error:
        command_envelope(ADMIN, raw, None, None, None)
    return error.value


# --- the one rule for text no store can keep -------------------------------------------------

@pytest.mark.parametrize("text,fragment", [
    ("a\x00b", "NUL (U+0000 at position 1)"),
    ("\ud800", "lone surrogate (U+D800 at position 0)"),
    ("x\udfff", "lone surrogate (U+DFFF at position 1)"),
    ("bell\x07", "control character (U+0007 at position 4)"),
    ("\x1b[31m", "control character (U+001B at position 0)"),
])
def test_unstorable_text_is_named_with_its_position(text, fragment):
    assert fragment in unstorable(text)


def test_tab_line_breaks_and_any_other_character_are_text():
    assert unstorable("tab\there\r\nnext line, café, 😀, \x7f") is None


def test_escaped_writes_only_the_unstorable_characters_as_escapes():
    assert escaped("café\x00\ud800") == "café\\u0000\\ud800"


# --- bodies: text, anywhere in the body, names its JSON path ----------------------------------

@pytest.mark.parametrize("body,field", [
    ({"type": "FailRun", "run_id": RUN, "error": "boom\x00"}, "error"),
    ({"type": "CancelRun", "run_id": RUN, "reason": "\ud800"}, "reason"),
    ({"type": "RequestRun", "agent_id": "a", "labels": {"env": "prod\x00"}}, "labels.env"),
    ({"type": "RequestRun", "agent_id": "a", "labels": {"k\x00": "v"}}, "labels.k\\u0000"),
    ({"type": "RequestRun", "agent_id": "a", "labels": [["ok", "\x07"]]}, "labels.0.1"),
    ({"type": "RequestRun", "agent_id": "a", "extra\ud800": 1}, "extra\\ud800"),
    ({"type": "StartRun\x00"}, "type"),
])
def test_unstorable_text_anywhere_in_the_body_is_refused_naming_its_path(body, field):
    error = refused(body)
    assert (status_of(error), error.code, error.details[0]["field"]) == (422, "invalid_text", field)
    assert error.reason.startswith(f"{field}: has ")


def test_a_lone_surrogate_escape_in_the_raw_json_is_refused_before_validation():
    error = refused(b'{"type":"FailRun","run_id":"' + RUN.encode() + b'","error":"x\\ud800y"}')
    assert (status_of(error), error.code, error.details[0]["field"]) == (422, "invalid_text", "error")
    assert "lone surrogate (U+D800 at position 1)" in error.reason


@pytest.mark.parametrize("body,field", [
    ({"type": "FailRun", "run_id": RUN, "error": "boom\x00"}, "error"),
    ({"type": "DenyApproval", "approval_id": RUN, "reason": "x\x1f"}, "reason"),
])
def test_the_command_models_refuse_unstorable_text_themselves(body, field):
    with pytest.raises(ValidationError) as error:
        COMMAND.validate_python(body)
    assert error.value.errors()[0]["loc"][1:] == (field,) and "has " in error.value.errors()[0]["msg"]


def test_free_text_keeps_tabs_and_line_breaks():
    envelope = command_envelope(ADMIN, json.dumps({"type": "FailRun", "run_id": RUN, "error": "a\tb\r\nc"}).encode(),
                                None, None, None)
    assert envelope["body"]["error"] == "a\tb\r\nc"


# --- bodies: what two parsers would read differently ------------------------------------------

@pytest.mark.parametrize("raw,key", [
    (b'{"type":"RequestRun","agent_id":"a","agent_id":"b"}', "agent_id"),
    (b'{"type":"RequestRun","agent_id":"a","labels":{"k":"1","k":"2"}}', "k"),
    (b'{"type":"StartRun","type":"ForceFailRun","run_id":"' + RUN.encode() + b'"}', "type"),
])
def test_a_repeated_key_anywhere_is_refused_naming_it(raw, key):
    error = refused(raw)
    assert (status_of(error), error.code) == (400, "duplicate_key") and f"'{key}'" in error.reason


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_numbers_json_has_no_word_for_are_malformed(constant):
    error = refused(b'{"type":"RecordCost","provider":"p","model":"m","amount_micros":' + constant
                    + b',"currency":"USD"}')
    assert (status_of(error), error.code) == (400, "malformed_json") and constant.lstrip(b"-").decode() in error.reason


@pytest.mark.parametrize("raw", [
    '{"type":"RequestRun","agent_id":"a"}'.encode("utf-16"),
    b'{"type":"RequestRun","agent_id":"\xff"}',
    b'\xef\xbb\xbf{"type":"RequestRun","agent_id":"a"}',
])
def test_a_body_that_is_not_plain_utf8_is_malformed(raw):
    error = refused(raw)
    assert (status_of(error), error.code) == (400, "malformed_json")


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type":"RequestRun","agent_id":"a","labels":' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"type":"RequestRun","agent_id":"a","labels":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}",
])
def test_deep_nesting_is_refused_whether_or_not_the_parser_survives_it(raw):
    error = refused(raw)
    assert (status_of(error), error.code) == (400, "too_deeply_nested") and "32 levels" in error.reason


@pytest.mark.parametrize("kind", [["RequestRun"], {"a": 1}, 7, True, 1.5])
def test_a_type_that_is_not_a_string_is_a_422_naming_type(kind):
    error = refused({"type": kind, "agent_id": "a"})
    assert (status_of(error), error.code, error.details[0]["field"]) == (422, "invalid_command", "type")


@pytest.mark.parametrize("version", [2**53, 2**64, -1, True, 1.0, "1"])
def test_expected_version_is_an_integer_the_hash_rule_keeps_exact(version):
    error = refused({"type": "RequestRun", "agent_id": "a", "expected_version": version})
    assert (status_of(error), error.code, error.details[0]["field"]) == (422, "invalid_command", "expected_version")


def test_the_largest_safe_expected_version_is_accepted_and_digested():
    envelope = command_envelope(ADMIN, json.dumps({"type": "RequestRun", "agent_id": "a",
                                                   "expected_version": 2**53 - 1}).encode(), None, None, None)
    assert envelope["expected_version"] == 2**53 - 1 and len(envelope["request_digest"]) == 64


# --- bodies: a JSON integer is the only integer, a string the only string ---------------------

RECORD_COST = {"type": "RecordCost", "provider": "p", "model": "m", "amount_micros": 1, "currency": "USD"}
REQUEST_APPROVAL = {"type": "RequestApproval", "run_id": RUN, "action": "a", "risk_tier": "low"}
INT_FIELDS = [
    (RECORD_COST, "amount_micros"), (RECORD_COST, "tokens_in"), (RECORD_COST, "tokens_out"),
    ({"type": "RequestRun", "agent_id": "a"}, "budget_micros"),
    ({"type": "SetBudget", "project": "p", "period": "day", "currency": "USD", "limit_micros": 1}, "limit_micros"),
    (REQUEST_APPROVAL, "expires_in_seconds"), (REQUEST_APPROVAL, "required_approvals"),
]


@pytest.mark.parametrize("value", [True, "1", 1.0, "1.0"])
@pytest.mark.parametrize("body,field", INT_FIELDS, ids=[f for _, f in INT_FIELDS])
def test_every_integer_field_takes_only_a_json_integer(body, field, value):
    error = refused({**body, field: value})
    assert (status_of(error), error.code) == (422, "invalid_command")
    assert [d["field"] for d in error.details] == [field] and field in error.reason


@pytest.mark.parametrize("body,field", INT_FIELDS, ids=[f for _, f in INT_FIELDS])
def test_every_integer_field_still_takes_a_json_integer(body, field):
    assert command_envelope(ADMIN, json.dumps({**body, field: 1}).encode(), None, None, None)["body"][field] == 1


@pytest.mark.parametrize("body,field", [
    ({"type": "RequestRun", "agent_id": True}, "agent_id"),
    ({"type": "FailRun", "run_id": RUN, "error": False}, "error"),
    ({"type": "StartStep", "run_id": RUN, "kind": True, "name": "n"}, "kind"),
    ({**RECORD_COST, "currency": 1}, "currency"),
    ({"type": "StartRun", "run_id": 1}, "run_id"),
])
def test_bools_and_numbers_are_not_strings_or_literals(body, field):
    error = refused(body)
    assert (status_of(error), error.code, [d["field"] for d in error.details]) == (422, "invalid_command", [field])


def test_uuid_fields_still_take_uuid_strings_and_store_them_canonically():
    envelope = command_envelope(ADMIN, json.dumps({"type": "StartRun", "run_id": RUN.upper()}).encode(),
                                None, None, None)
    assert envelope["body"]["run_id"] == RUN
    assert COMMAND.validate_python(envelope["body"]).run_id == UUID(RUN)  # as the processor reads it again


def test_an_idempotency_key_with_a_trailing_newline_is_refused():
    with pytest.raises(DomainError) as error:
        command_envelope(ADMIN, b'{"type":"RequestRun","agent_id":"a"}', "key\n", None, None)
    assert error.value.code == "invalid_idempotency_key"


# --- Content-Length -------------------------------------------------------------------------------

@pytest.mark.parametrize("declared,status,code", [
    ("²", 400, "invalid_content_length"), ("-1", 400, "invalid_content_length"), (" 1", 400, "invalid_content_length"),
    ("", 400, "invalid_content_length"), ("9" * 5000, 413, "body_too_large"), ("1001", 413, "body_too_large"),
])
def test_a_declared_length_that_is_not_plain_digits_or_too_big_is_a_4xx(declared, status, code):
    with pytest.raises(Refused) as error:
        check_declared_length(declared, 1000)
    assert (error.value.status, error.value.code) == (status, code)


@pytest.mark.parametrize("declared", [None, "0", "1000", "0001000"])
def test_a_declared_length_within_the_limit_passes(declared):
    assert check_declared_length(declared, 1000) is None


# --- tokens -------------------------------------------------------------------------------------

def signed(**claims) -> str:
    base = {"sub": "ann", "tenant_id": "acme", "roles": ["operator"], "aud": "runledger",
            "iat": int(time.time()), "exp": int(time.time()) + 60}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def signed_raw(payload: bytes) -> str:
    return jwt.api_jws.encode(payload, SECRET, algorithm="HS256")


def auth_error(token: str) -> AuthError:
    with pytest.raises(AuthError) as error:
        authenticate(token, SECRET, "runledger")
    return error.value


@pytest.mark.parametrize("roles", [[["admin"]], [{"admin": 1}], ["admin", 1], "admin"])
def test_roles_that_are_not_a_list_of_strings_are_an_invalid_token(roles):
    error = auth_error(signed(roles=roles))
    assert (error.code, "roles" in error.reason) == ("invalid_token", True)


@pytest.mark.parametrize("claim,value", [
    ("exp", "9999999999"), ("exp", True), ("exp", [9999999999]), ("iat", "1"), ("iat", True), ("nbf", "0"),
    ("nbf", False),
])
def test_numeric_dates_must_be_json_numbers(claim, value):
    error = auth_error(signed(**{claim: value}))
    assert error.code == "invalid_token" and f"{claim} must be a number" in error.reason


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity"])
def test_a_numeric_date_that_is_not_finite_is_refused(constant):
    payload = b'{"sub":"ann","tenant_id":"acme","roles":["operator"],"aud":"runledger","exp":' + constant + b"}"
    error = auth_error(signed_raw(payload))
    assert error.code == "invalid_token" and "exp must be a number" in error.reason


@pytest.mark.parametrize("claim,offset_s,code,fragment", [
    ("exp", -1, "token_expired", "expired"),
    ("nbf", 600, "invalid_token", "nbf"),
    ("iat", 600, "invalid_token", "iat"),
])
def test_times_are_still_checked(claim, offset_s, code, fragment):
    # the instant is taken when the test runs, not when it is collected (a long suite outlives 600 s)
    error = auth_error(signed(**{claim: int(time.time()) + offset_s}))
    assert error.code == code and fragment in error.reason


def test_fractional_numeric_dates_are_numbers_too():
    assert authenticate(signed(exp=time.time() + 60.5, iat=time.time() - 0.5), SECRET, "runledger").subject == "ann"


@pytest.mark.parametrize("claims,fragment", [
    ({"tenant_id": "acme\n"}, "tenant_id"),
    ({"sub": "ann\n"}, "sub"),
    ({"sub": "ann\x00"}, "sub"),
    ({"sub": "\ud800"}, "sub"),
    ({"sub": "x" * 201}, "sub"),
])
def test_ids_with_a_trailing_newline_or_unstorable_text_are_an_invalid_token(claims, fragment):
    error = auth_error(signed(**claims))
    assert error.code == "invalid_token" and fragment in error.reason


# --- cursors --------------------------------------------------------------------------------------

def forged(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("parsers,values", [
    (INSTANT_AND_ID, ["x", "y"]), (INSTANT_AND_ID, [1, {}]), (INSTANT_AND_ID, [None, None]),
    (INSTANT_AND_ID, ["2024-01-01T00:00:00", str(uuid4())]),  # no offset: Postgres would guess one
    (INSTANT_AND_ID, ["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
    (INSTANT_AND_ID, ["2024-01-01T00:00:00+00:00"]),
    (CHAIN_SEQ, ["x"]), (CHAIN_SEQ, [True]), (CHAIN_SEQ, [-1]), (CHAIN_SEQ, [1.5]), (CHAIN_SEQ, [2**64]),
    (CHAIN_SEQ, [None]), (CHAIN_SEQ, {"a": 1}),
])
def test_a_forged_cursor_of_the_wrong_shape_is_a_bad_cursor(parsers, values):
    with pytest.raises(BadCursor):
        decode_cursor(forged(values), parsers)


@pytest.mark.parametrize("cursor", ["%%%", "é", forged([1]) + "!", base64.urlsafe_b64encode(b"[" * 20000).decode()])
def test_a_cursor_that_is_not_base64_json_is_a_bad_cursor(cursor):
    with pytest.raises(BadCursor):
        decode_cursor(cursor, CHAIN_SEQ)


def test_cursors_the_api_issues_decode_to_typed_values():
    requested_at, run_id = datetime(2024, 5, 1, 12, tzinfo=timezone.utc), uuid4()
    assert decode_cursor(encode_cursor([requested_at.isoformat(), str(run_id)]), INSTANT_AND_ID) == [requested_at, run_id]
    assert decode_cursor(encode_cursor([42]), CHAIN_SEQ) == [42]


# --- query parameters and ids --------------------------------------------------------------------

@pytest.mark.parametrize("value,fragment", [
    ("0", "ISO 8601"), ("0.5", "ISO 8601"), ("1e3", "ISO 8601"), ("-1", "ISO 8601"),
    ("0001-01-01T00:00:00Z", "1900-01-01"), ("1899-12-31T23:59:59Z", "1900-01-01"),
    ("2300-01-01T00:00:00Z", "2299-12-31"), ("9999-12-31T23:59:59-14:00", "2299-12-31"),
])
def test_an_instant_is_an_iso_time_clickhouse_can_hold(value, fragment):
    with pytest.raises(ValidationError) as error:
        TypeAdapter(Instant).validate_python(value)
    assert fragment in str(error.value)


def test_an_instant_without_an_offset_is_utc():
    assert TypeAdapter(Instant).validate_python("2024-05-01T12:00:00") == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("raw", ["²", "9" * 5000, "-1", " 1", "1 ", "1" * 19, "0x1", "١"])
def test_a_last_event_id_is_up_to_18_ascii_digits(raw):
    for header, query in ((raw, None), (None, raw)):
        with pytest.raises(Refused) as error:
            resume_point(header, query)
        assert (error.value.status, error.value.code) == (400, "invalid_last_event_id")


@pytest.mark.parametrize("raw,after", [("0", 0), ("17", 17), ("9" * 18, int("9" * 18)), ("", None), (None, None)])
def test_a_plain_last_event_id_is_a_position(raw, after):
    assert resume_point(raw, None) == after


def request(path_params: dict, query_string: bytes) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": query_string,
                    "path_params": path_params})


@pytest.mark.parametrize("path_params,query_string,field", [
    ({}, b"agent_id=%00", "agent_id"),
    ({}, b"limit=5&actor=a%07b", "actor"),
    ({}, b"required_role=%1F", "required_role"),
    ({"run_id": "\x00"}, b"", "run_id"),
    ({}, b"x%00=1", "x\\u0000"),
])
async def test_the_guard_refuses_unstorable_parameters_naming_them(path_params, query_string, field):
    with pytest.raises(Refused) as error:
        await refuse_unstorable_parameters(request(path_params, query_string))
    assert (error.value.status, error.value.code, error.value.details[0]["field"]) == (400, "invalid_parameter", field)


async def test_the_guard_lets_ordinary_parameters_through():
    assert await refuse_unstorable_parameters(request({"run_id": RUN}, b"agent_id=caf%C3%A9&since=2024-01-01")) is None
