"""The processor's fast sealing (schemas/sealing.py) against the reference (`schemas.envelope.seal`, RFC 8785).

Given varied commands (unicode, big integers, floats, nested data, odd field types), every envelope the
ledger appends hashes and encodes exactly as the reference seals the same fields, and the reference
agrees with the rfc8785 package byte for byte.
"""
import hashlib
import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import rfc8785

from domain.ledger import TenantLedger
from schemas.chain import verify_chain
from schemas.envelope import GENESIS_HASH, canonical, encode, instant, seal
from schemas import sealing
from schemas.sealing import Stamp, seal_event
from tests.unit.harness import ADMIN, Harness
from tests.unit.test_envelope import random_value

FIELDS = ("event_id", "chain_seq", "prev_hash", "type", "schema_version", "aggregate_type", "aggregate_id",
          "aggregate_version", "occurred_at", "payload")


def body_of(env: dict) -> dict:
    return {k: v for k, v in env.items() if k != "hash"}


def assert_sealed_as_reference(env: dict) -> None:
    reference = seal(body_of(env))
    assert (env["hash"], encode(env), dict(env)) == (reference["hash"], encode(reference), dict(reference))
    assert env["hash"] == hashlib.sha256(rfc8785.dumps(body_of(env))).hexdigest()
    assert json.loads(encode(env)) == dict(env)


def corpus(h: Harness) -> None:
    """Commands of most kinds, with unicode names, the largest exact integers and nested payloads."""
    run = h.ok({"type": "RequestRun", "agent_id": "agent-ü", "project": "café 日本 𝄞", "budget_micros": 2**53 - 1,
                "labels": {"équipe": "nuit", "k": "v\u2028"}, "deadline_s": 3600})
    h.ok({"type": "StartRun", "run_id": run})
    step = h.ok({"type": "StartStep", "run_id": run, "kind": "tool", "name": "fetch \"quoted\" \\ back/slash"})
    h.ok({"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "failed", "error": "503 é"})
    h.ok({"type": "RecordCost", "run_id": run, "provider": "anthröpic", "model": "m-1", "tokens_in": 2**53 - 1,
          "tokens_out": 0, "amount_micros": 2**53 - 1, "currency": "EUR"})
    h.ok({"type": "SetBudget", "project": "ops", "period": "day", "limit_micros": 10**12, "currency": "USD"}, ADMIN)
    h.ok({"type": "RecordCost", "project": "ops", "provider": "p", "model": "m", "tokens_in": 1, "tokens_out": 2,
          "amount_micros": 3, "currency": "USD"}, actor={"subject": "agént-2", "roles": ["operator", "auditor"]})
    call = h.tool_call(run, "ALLOW")
    h.ok({"type": "CompleteToolCall", "tool_call_id": call, "result_digest": "ab" * 32})
    pending = h.tool_call(run, "REQUIRE_APPROVAL")
    approval = h.ok({"type": "RequestApproval", "run_id": run, "tool_call_id": pending, "action": "déployer",
                     "risk_tier": "high", "expires_in_seconds": 600})
    h.ok({"type": "GrantApproval", "approval_id": approval, "reason": "ok ✓"}, {"subject": "ann", "roles": ["approver"]})
    h.ok({"type": "FailRun", "run_id": run, "error": "gave up"})
    h.ok({"type": "RetryRun", "run_id": run})
    h.ok({"type": "CancelRun", "run_id": run, "reason": "stop"}, key="key-1")


def test_every_event_of_a_varied_corpus_is_sealed_as_the_reference_seals_it():
    h = Harness()
    corpus(h)
    assert len(h.log) >= 20
    for env in h.log:
        assert_sealed_as_reference(env)
    assert verify_chain("acme", h.log).ok is True


def test_odd_command_envelopes_are_sealed_as_the_reference_seals_them():
    # what the intake never writes, but a record on the commands topic could hold
    ledger, now = TenantLedger("tenant-é"), datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
    odd = [{"correlation_id": "corr-日本", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
           {"causation_id": "cause \"q\"", "occurred_at": "2026-12-02T09:59:59.000001Z"},
           {"idempotency_key": "ключ"}, {"correlation_id": "x\u2028y", "idempotency_key": ""}]
    sealed = []
    for extra in odd:
        command = {"command_id": str(uuid.uuid4()), "tenant_id": ledger.tenant_id, "request_digest": "d",
                   "actor": {"subject": "sübject", "roles": ["operator"]}, "idempotency_key": None,
                   "body": {"type": "RequestRun", "agent_id": "a"}, **extra}
        reply, envelopes = ledger.execute(command, now)
        assert reply["status"] == "accepted", reply
        sealed += envelopes
    for env in sealed:
        assert_sealed_as_reference(env)
    assert [("occurred_at" in e, "idempotency_key" in e) for e in sealed] == [
        (True, False), (True, False), (True, True), (True, False)]
    assert sealed[1]["occurred_at"] == "2026-12-02T09:59:59.000001Z"


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice("abc-_.:0Z \"\\é日𝄞\u2028\x00\x1f") for _ in range(rng.randint(0, 8)))


def odd_value(rng: random.Random, usual, odds: float = 0.25):
    """Mostly the usual value; sometimes text that needs escaping, another type, or a big number."""
    if rng.random() >= odds:
        return usual
    return rng.choice([random_text(rng), None, 7, True, 1.5, 2**53, -(2**53 - 1), ["x"], {"k": "v"}])


def random_case(rng: random.Random) -> tuple[Stamp, tuple]:
    fields = {"recorded_at": "2026-12-02T10:00:00.000001Z", "actor": {"subject": "bot", "roles": ["operator"]},
              "command_id": str(uuid.UUID(int=rng.getrandbits(128))), "causation_id": "c", "correlation_id": "c",
              "traceparent": None}
    if rng.random() < 0.5:
        fields["idempotency_key"] = "key-1"
    if rng.random() < 0.3:
        fields["occurred_at"] = "2026-12-02T09:00:00.000000Z"
    fields = {k: odd_value(rng, v, 0.05) for k, v in fields.items()}
    if rng.random() < 0.1:
        fields["actor"] = {"subject": random_text(rng), "roles": [odd_value(rng, "operator")]}
    if rng.random() < 0.05:
        fields["extra"] = "x"
    if rng.random() < 0.05:
        del fields["traceparent"]
    usual = (str(uuid.UUID(int=rng.getrandbits(128))), rng.randint(1, 10**6), "a" * 64, "run.started", 1, "run",
             str(uuid.UUID(int=rng.getrandbits(128))), rng.randint(1, 1000), "2026-12-02T10:00:00.000000Z")
    args = tuple(odd_value(rng, v) if rng.random() < 0.2 else v for v in usual)
    payload = {f"k{i}": random_value(rng) for i in range(rng.randint(0, 4))}
    if rng.random() < 0.1:
        payload["n"] = rng.choice([1.5, 2**53, -(2**60), 0.1])
    return Stamp(odd_value(rng, "acme") if rng.random() < 0.1 else "acme", fields), args + (payload,)


def outcome(seal_it):
    try:
        env = seal_it()
    except Exception as error:  # noqa: BLE001 - the fast path must fail exactly where the reference fails
        return type(error)
    return dict(env), env.record


def test_seal_event_equals_the_reference_on_thousands_of_random_fields(monkeypatch):
    handed_over = []  # the cases the fast form gave to the reference
    monkeypatch.setattr(sealing, "seal", lambda fields: handed_over.append(1) or seal(fields))
    rng = random.Random(14)
    for _ in range(4000):
        stamp, args = random_case(rng)
        reference_fields = {"tenant_id": stamp.tenant_id, **dict(zip(FIELDS, args)), **stamp.fields}
        reference_fields["payload"] = reference_fields.pop("payload")
        expected = outcome(lambda: seal(reference_fields))
        assert outcome(lambda: seal_event(stamp, *args)) == expected
    assert 500 < len(handed_over) < 3500  # both paths were taken, many times each


def test_the_reference_itself_is_rfc8785():
    rng = random.Random(8785)
    for _ in range(500):
        stamp, args = random_case(rng)
        fields = {"tenant_id": stamp.tenant_id, **dict(zip(FIELDS, args)), **stamp.fields}
        try:
            expected = rfc8785.dumps(fields)
        except (rfc8785.CanonicalizationError, TypeError):
            continue
        assert canonical(fields) == expected


@pytest.mark.parametrize("at", [datetime(2026, 12, 2, 10, 0, 0, 0, tzinfo=timezone.utc),
                                datetime(999, 1, 1, tzinfo=timezone.utc),
                                datetime(2026, 12, 2, 11, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))])
def test_an_instant_is_formatted_as_strftime_formats_it(at):
    assert instant(at) == at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_genesis_event_has_sixty_four_zeros_before_it():
    h = Harness()
    h.ok({"type": "RequestRun", "agent_id": "a"})
    assert (h.log[0]["prev_hash"], h.log[0]["chain_seq"]) == (GENESIS_HASH, 1)
    assert_sealed_as_reference(h.log[0])


def test_a_reply_is_encoded_as_kafka_dumps_encodes_it():
    from infra.adapters import kafka
    from schemas.envelope import encode_json
    h = Harness()
    replies = [h.send(body) for body in ({"type": "RequestRun", "agent_id": "agent-ü", "labels": {"k": "v"}},
                                         {"type": "StartRun", "run_id": str(uuid.uuid4())})]
    rng = random.Random(5)
    values = replies + [{f"k{i}": random_value(rng) for i in range(5)} for _ in range(500)] + [{"f": 1.5, "n": 2**70}]
    assert [encode_json(v) for v in values] == [kafka.dumps(v) for v in values]
