"""Properties of the intake: whatever the body, a specific 4xx refusal or an envelope every store can keep.

Bodies are any JSON value, valid commands of every type with fields swapped for arbitrary JSON,
unknown keys added and NUL, control characters or lone surrogates put into their strings, and
those encoded as JSON text in several ways (ASCII escapes, raw UTF-8 that may not be valid, a
repeated member, deep nesting). `command_envelope` either refuses with a 4xx whose code says
what is wrong and whose response can be rendered, or returns an envelope whose body the hash rule
can canonicalise, holds no text that domain/text.py refuses, encodes as UTF-8, and reads back
to itself. Anything else (another exception, a 5xx) is a bug the API would answer with a 500.
"""
import json
import re
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from infra.adapters.http.openapi import IDEMPOTENCY_KEY as DOCUMENTED_KEY
from infra.adapters.http.openapi import LAST_EVENT_ID as DOCUMENTED_EVENT_ID
from infra.adapters.http.auth import ROLES, Principal
from commands.intake import command_envelope
from domain.errors import DomainError
from infra.adapters.http.errors import Refused, status_of
from domain.commands import COMMAND_TYPES
from domain.text import unstorable
from streams.routes import resume_point

PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GENERIC_CODES = {"rejected", "error", "invalid", "invalid_request", "bad_request", "internal_error", "unknown"}
ID = "01a20000-0000-7000-8000-000000000001"
DIGEST = "ab" * 32
VALID: dict[str, dict[str, Any]] = {
    "RequestRun": {"agent_id": "bot", "project": "p", "budget_micros": 5, "labels": {"team": "a"}},
    "StartRun": {"run_id": ID},
    "StartStep": {"run_id": ID, "kind": "llm", "name": "plan"},
    "FinishStep": {"run_id": ID, "step_id": ID, "outcome": "failed", "error": "boom"},
    "CompleteRun": {"run_id": ID},
    "FailRun": {"run_id": ID, "error": "boom"},
    "RetryRun": {"run_id": ID},
    "CancelRun": {"run_id": ID, "reason": "stop"},
    "ResumeRun": {"run_id": ID, "reason": "go"},
    "ForceFailRun": {"run_id": ID, "reason": "stuck"},
    "SetRunDeadline": {"deadline_s": 3600},
    "RequestToolCall": {"run_id": ID, "tool": "search", "risk_tier": "low", "params_digest": DIGEST},
    "DecidePolicy": {"tool_call_id": ID, "decision": "ALLOW", "policy_id": "p1", "policy_version": "3",
                     "bundle_revision": "b-17", "evaluated_at": "2026-11-22T12:00:00Z", "reason": "fine"},
    "CompleteToolCall": {"tool_call_id": ID, "result_digest": DIGEST},
    "FailToolCall": {"tool_call_id": ID, "error": "timeout"},
    "RequestApproval": {"run_id": ID, "action": "pay", "risk_tier": "high", "required_approvals": 2},
    "GrantApproval": {"approval_id": ID, "reason": "ok"},
    "DenyApproval": {"approval_id": ID, "reason": "no"},
    "ExpireApproval": {"approval_id": ID},
    "SetBudget": {"project": "p", "period": "month", "limit_micros": 10, "currency": "EUR"},
    "RecordCost": {"run_id": ID, "provider": "openai", "model": "m", "tokens_in": 3, "amount_micros": 7,
                   "currency": "USD"},
    "PlaceLegalHold": {"matter": "Doe v. Acme", "reason": "litigation",
                       "scope": {"kind": "time_range", "start": "2026-01-01T00:00:00Z",
                                 "end": "2026-02-01T00:00:00+01:00"}},
    "ReleaseLegalHold": {"hold_id": ID, "reason": "settled"},
    "SetRetentionPolicy": {"record_class": "operational", "days": 30},
    "SweepRetention": {"record_class": "audit", "limit": 10},
    "SetContentPolicy": {"store_content": True},
    "ShredSubject": {"subject": "user:42", "reason": "erasure request 2026-117"},
    "SignCheckpoint": {},
    "RecordExport": {"scope": {"kind": "run", "id": ID}, "events": 12, "checkpoint_size": 40, "bundle_sha256": DIGEST},
    "RequestExport": {"scope": {"kind": "run", "id": ID}, "checkpoint_size": 40},
    "FailExport": {"job_id": ID, "code": "write_failed", "reason": "the disk filled up"},
    "PublishPolicy": {"policy_id": "default", "version": "1.0.0", "cedar_schema": "entity Agent;",
                      "policies": '@id("a") permit(principal, action, resource);'},
    "ActivatePolicy": {"policy_id": "default", "version": "1.0.0", "project": "p"},
    "RecordStepUp": {"tool_call_id": ID, "kind": "webauthn", "subject": "ann", "authenticated_at": "2026-11-22T12:00:00Z"},
    "RecordVerification": {"chain_size": 40, "models": {"runs": {"rows": 3, "missing": 1, "extra": 0, "mismatched": 0,
                                                                 "applied": 40, "stopped_at": None, "ok": False}},
                           "problems": [{"model": "runs", "table": "runs", "key": {"run_id": ID}, "kind": "missing"}]},
}
UNSTORABLE = ["\x00", "\x01", "\x1f", "\ud800", "\udbff", "\udfff"]
ODD_TEXT = ["\x7f", "\u2028", "\ufeff", "\t", "\n", "\U0001f600", ""]

any_char = st.characters(exclude_categories=())  # surrogates included
text = st.text(any_char, max_size=12) | st.sampled_from(UNSTORABLE + ODD_TEXT)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**53 - 2, max_value=2**64)
           | st.floats(allow_nan=False, allow_infinity=False) | text | st.just(ID))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)
EVERY_ROLE = Principal("acme", "agent", tuple(sorted(ROLES)))
principals = st.just(EVERY_ROLE) | st.builds(lambda roles: Principal("acme", "agent", tuple(sorted(roles))),
                                             st.sets(st.sampled_from(sorted(ROLES)), min_size=1))


@pytest.mark.parametrize("kind", sorted(COMMAND_TYPES))
def test_every_command_type_has_a_sample_that_is_accepted_as_it_is(kind):
    raw = json.dumps({"type": kind, **VALID[kind]}).encode()
    if kind in ("ExpireApproval", "SignCheckpoint"):
        with pytest.raises(DomainError, match="issued by runledger itself"):
            command_envelope(EVERY_ROLE, raw, None, None, None)
    else:
        assert_storable(command_envelope(EVERY_ROLE, raw, "key-1", None, None))


@st.composite
def mutated_commands(draw) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(VALID)))
    body = {"type": kind, **VALID[kind]}
    fields = sorted(set(COMMAND_TYPES[kind].model_fields) | {"expected_version"})
    if draw(st.booleans()):
        for field in draw(st.lists(st.sampled_from(fields), unique=True, min_size=1, max_size=3)):
            body[field] = draw(json_values)
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(text, json_values, min_size=1, max_size=2)))
    strings = [k for k, v in body.items() if isinstance(v, str)]
    if strings and draw(st.booleans()):
        field = draw(st.sampled_from(strings))
        at = draw(st.integers(0, len(body[field])))
        body[field] = body[field][:at] + draw(st.sampled_from(UNSTORABLE)) + body[field][at:]
    return body


def deeply_nested(depth: int) -> bytes:
    return b'{"type":"RequestRun","agent_id":"a","labels":' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def encoded(draw, values) -> bytes:
    """A value as request bytes: ASCII-escaped, raw UTF-8 (invalid where it has lone surrogates) or
    with a member repeated."""
    value = draw(values)
    how = draw(st.sampled_from(["ascii", "utf-8", "repeat"]))
    if how == "ascii":
        return json.dumps(value).encode()
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how == "repeat" and isinstance(value, dict) and value:
        first = json.dumps(next(iter(value))).encode("utf-8", "surrogatepass")
        return b"{" + first + b": null, " + raw[1:]
    return raw


bodies = (encoded(mutated_commands()) | encoded(mutated_commands()) | encoded(json_values)
          | st.binary(max_size=40) | st.integers(1, 5000).map(deeply_nested))
printable_keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=210)
keys = (st.none() | printable_keys | st.text(any_char, max_size=210) | st.just("k" * 201)
        | printable_keys.map(lambda key: key[:199] + "\n"))  # `$` matches before a final newline


@PROPERTY
@given(principal=principals, raw=bodies, key=st.none() | printable_keys | keys)
def test_any_body_is_refused_specifically_or_becomes_a_storable_envelope(principal, raw, key):
    try:
        envelope = command_envelope(principal, raw, key, None, None)
    except DomainError as refusal:
        event(f"refused {status_of(refusal)} {refusal.code}")  # see them with --hypothesis-show-statistics
        assert_specific(refusal)
    else:
        event("accepted")
        assert_storable(envelope)


def assert_specific(refusal: DomainError) -> None:
    status = status_of(refusal)
    assert 400 <= status < 500, f"{status} {refusal.code}: {refusal.reason}"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", refusal.code) and refusal.code not in GENERIC_CODES, refusal.code
    assert refusal.reason.strip()
    rendered = {"status": "rejected", "code": refusal.code, "reason": refusal.reason,
                "details": getattr(refusal, "details", None)}
    json.dumps(rendered, ensure_ascii=False).encode("utf-8")  # what the API's JSONResponse does


def assert_storable(envelope: dict[str, Any]) -> None:
    body = envelope["body"]
    assert json.loads(rfc8785.dumps(body)) == body
    for where, value in strings_of(body):
        assert unstorable(value) is None, f"{where}: {unstorable(value)}"
    json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    principal = Principal(envelope["tenant_id"], envelope["actor"]["subject"], tuple(envelope["actor"]["roles"]))
    again = command_envelope(principal, json.dumps(body).encode(), None, None, None)
    assert again["body"] == body, "the canonical body must read back to itself"


def strings_of(value: Any, where: str = "body"):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key!r}", key
            yield from strings_of(item, f"{where}.{key!r}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_of(item, f"{where}[{index}]")


@PROPERTY
@given(key=keys)
def test_the_documented_idempotency_key_rule_is_the_one_the_intake_applies(key):
    body = json.dumps({"type": "StartRun", "run_id": ID}).encode()
    operator = Principal("acme", "agent", ("operator",))
    try:
        command_envelope(operator, body, key, None, None)
        accepted = True
    except DomainError as refusal:
        assert refusal.code == "invalid_idempotency_key"
        accepted = False
    assert accepted == (key is None or re.fullmatch(DOCUMENTED_KEY, key) is not None), repr(key)


@PROPERTY
@given(raw=st.text(any_char, max_size=22) | st.integers(0, 10**20).map(str))
def test_the_documented_last_event_id_rule_is_the_one_streams_apply(raw):
    try:
        position = resume_point(raw, None)
    except Refused as refusal:
        assert (refusal.status, refusal.code) == (400, "invalid_last_event_id")
        assert re.fullmatch(DOCUMENTED_EVENT_ID, raw) is None, repr(raw)
    else:
        assert raw == "" or (re.fullmatch(DOCUMENTED_EVENT_ID, raw) and position == int(raw)), repr(raw)

