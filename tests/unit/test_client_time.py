"""Client time: `occurred_at` as the intake writes it, bounded by the processor's clock, on the chain as given."""
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
import rfc8785

from commands.intake import command_envelope
from domain.client_time import ClockBounds, read_occurred_at
from domain.errors import DomainError
from domain.ledger import TenantLedger
from infra.adapters.http.auth import Principal
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import compute_hash

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
AGENT = Principal("acme", "agent", ("operator",))


def envelope(body: dict, key: str | None = None) -> dict:
    return command_envelope(AGENT, json.dumps(body).encode(), key, None, None)


@pytest.mark.parametrize("given,written", [
    ("2026-12-01T13:58:30.5+02:00", "2026-12-01T11:58:30.500000Z"),
    ("2026-12-01t11:58:30z", "2026-12-01T11:58:30.000000Z"),
    ("2026-12-01T06:58:30.123456789-05:00", "2026-12-01T11:58:30.123456Z"),
    ("2026-11-30T23:59:59-00:00", "2026-11-30T23:59:59.000000Z"),
])
def test_an_instant_with_an_offset_is_written_once_in_the_envelopes_form(given, written):
    assert read_occurred_at(given) == written


@pytest.mark.parametrize("given,problem", [
    ("2026-12-01T11:58:30", "must be an RFC 3339 date-time with an offset, e.g. 2026-05-01T12:00:00.250+02:00"),
    ("2026-12-01", "must be an RFC 3339 date-time with an offset, e.g. 2026-05-01T12:00:00.250+02:00"),
    (1796126400, "must be an RFC 3339 date-time with an offset, e.g. 2026-05-01T12:00:00.250+02:00"),
    ("2026-02-30T00:00:00Z", "is not a date-time: day is out of range for month"),
    ("2026-12-31T23:59:60Z", "is not a date-time: second must be in 0..59"),
    ("1899-12-31T23:59:59Z", "must be from 1900-01-01 to 2299-12-31 (UTC)"),
])
def test_anything_else_is_refused_at_the_intake_naming_the_field(given, problem):
    with pytest.raises(DomainError) as refused:
        envelope({"type": "RequestRun", "agent_id": "a", "occurred_at": given})
    assert (refused.value.code, refused.value.reason, refused.value.details) == (
        "invalid_occurred_at", f"occurred_at: {problem}", [{"field": "occurred_at", "problem": problem}])


@pytest.mark.parametrize("offset_s,code", [(300.001, "occurred_at_in_future"), (300, None), (0, None),
                                           (-86400 * 30, None), (-86400 * 30 - 0.001, "occurred_at_too_old")])
def test_the_bounds_are_the_skew_ahead_and_the_horizon_back_of_the_processors_clock(offset_s, code):
    stated = (NOW + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        ClockBounds().check(stated, NOW)
        refused = None
    except DomainError as error:
        refused = error.code
    assert refused == code


def test_a_command_without_occurred_at_digests_as_before_the_field_existed():
    body = {"type": "RequestRun", "agent_id": "a"}
    plain, stated = envelope(body), envelope({**body, "occurred_at": "2026-12-01T11:00:00Z"})
    old_rule = hashlib.sha256(rfc8785.dumps({"body": plain["body"], "expected_version": None})).hexdigest()
    assert ("occurred_at" not in plain, plain["request_digest"]) == (True, old_rule)
    assert (stated["occurred_at"], stated["body"]) == ("2026-12-01T11:00:00.000000Z", plain["body"])
    assert stated["request_digest"] != plain["request_digest"]


def test_the_stated_time_is_on_the_chain_hashed_and_a_rebuild_folds_it_unchanged():
    ledger = TenantLedger("acme")
    requested = envelope({"type": "RequestRun", "agent_id": "a", "occurred_at": "2026-12-01T11:00:00+00:00"}, "r")
    reply, appended = ledger.execute(requested, NOW)
    started = envelope({"type": "StartRun", "run_id": reply["aggregate_id"]})
    _, more = ledger.execute(started, NOW)
    log = appended + more
    assert [(e["occurred_at"], e["recorded_at"]) for e in log] == [
        ("2026-12-01T11:00:00.000000Z", "2026-12-01T12:00:00.000000Z"),
        (log[1]["occurred_at"], "2026-12-01T12:00:00.000000Z")]
    assert log[1]["occurred_at"] != "2026-12-01T11:00:00.000000Z"
    assert compute_hash({**log[0], "occurred_at": "2026-12-01T11:00:00.000001Z"}) != log[0]["hash"]
    assert verify_chain("acme", log) == ChainVerdict(ok=True, count=2, head_hash=log[1]["hash"])
    rebuilt = TenantLedger("acme")
    for env in log:
        rebuilt.apply(env)
    assert rebuilt.chain.head_hash == ledger.chain.head_hash
    reply_after, _ = rebuilt.execute({**envelope({"type": "CompleteRun", "run_id": reply["aggregate_id"]})}, NOW)
    assert reply_after["status"] == "accepted"


def test_a_retry_returns_the_first_outcome_even_once_its_time_is_past_the_horizon():
    ledger = TenantLedger("acme")
    body = {"type": "RequestRun", "agent_id": "a", "occurred_at": "2026-11-20T12:00:00Z"}
    first, appended = ledger.execute(envelope(body, "k"), NOW)
    later, again = ledger.execute(envelope(body, "k"), NOW + timedelta(days=30))
    fresh, none = ledger.execute(envelope({**body}, "other"), NOW + timedelta(days=30))
    assert (first["status"], len(appended)) == ("accepted", 1)
    assert (later["status"], later["replayed"], later["events"], again) == ("accepted", True, first["events"], [])
    assert (fresh["code"], none) == ("occurred_at_too_old", [])


@pytest.mark.parametrize("reason", ["plain", "tab\there, line\nbreak", "café 😀", "\"\\/\x7f"])
def test_the_request_digest_is_sha256_of_the_rfc8785_form_whatever_the_text(reason):
    stated = envelope({"type": "CancelRun", "run_id": "0196a6f4-7c1e-7000-8000-000000000042", "reason": reason,
                       "occurred_at": "2026-12-01T11:00:00Z"}, "k")
    source = {"body": stated["body"], "expected_version": None, "occurred_at": stated["occurred_at"]}
    assert stated["request_digest"] == hashlib.sha256(rfc8785.dumps(source)).hexdigest()
