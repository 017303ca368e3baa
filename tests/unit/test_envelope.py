"""The hash rule: SHA-256 over RFC 8785 JSON of the envelope minus `hash`, chained by prev_hash."""
import copy
import hashlib
import json

import pytest

from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import GENESIS_HASH, Envelope, cloudevents_headers, compute_hash, seal


def unsealed(seq: int, prev: str, **payload) -> dict:
    return {
        "event_id": f"01a20000-0000-7000-8000-{seq:012d}", "tenant_id": "acme", "chain_seq": seq,
        "prev_hash": prev, "type": "run.started", "schema_version": 1, "aggregate_type": "run",
        "aggregate_id": "01a20000-0000-7000-8000-000000000001", "aggregate_version": seq,
        "occurred_at": "2026-11-22T10:00:00.000000Z", "recorded_at": "2026-11-22T10:00:00.000001Z",
        "actor": {"subject": "bot", "roles": ["operator"]}, "command_id": "c", "causation_id": "c",
        "correlation_id": "c", "traceparent": None, "payload": payload,
    }


def chain(n: int) -> list[dict]:
    envelopes, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        env = seal(unsealed(seq, prev, note=f"event {seq}"))
        envelopes.append(env)
        prev = env["hash"]
    return envelopes


def test_hash_is_sha256_of_sorted_compact_json_without_hash_for_ascii_content():
    # For ASCII strings and integers RFC 8785 equals sorted keys, no whitespace.
    env = seal(unsealed(1, GENESIS_HASH, amount=12))
    body = {k: v for k, v in env.items() if k != "hash"}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert env["hash"] == expected


def test_known_vector():
    # Written down once from an independent computation; a change to the rule breaks this.
    env = seal(unsealed(1, GENESIS_HASH, text="héllo €", n=-3))
    canonical = ('{"actor":{"roles":["operator"],"subject":"bot"},"aggregate_id":"01a20000-0000-7000-8000-000000000001",'
                 '"aggregate_type":"run","aggregate_version":1,"causation_id":"c","chain_seq":1,"command_id":"c",'
                 '"correlation_id":"c","event_id":"01a20000-0000-7000-8000-000000000001",'
                 '"occurred_at":"2026-11-22T10:00:00.000000Z","payload":{"n":-3,"text":"héllo €"},'
                 f'"prev_hash":"{GENESIS_HASH}","recorded_at":"2026-11-22T10:00:00.000001Z","schema_version":1,'
                 '"tenant_id":"acme","traceparent":null,"type":"run.started"}')
    assert env["hash"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_prev_hash_is_inside_what_is_hashed():
    a = unsealed(2, "a" * 64)
    b = unsealed(2, "b" * 64)
    assert compute_hash(a) != compute_hash(b)


def test_a_valid_chain_verifies_with_count_and_head():
    envelopes = chain(5)
    verdict = verify_chain("acme", envelopes)
    assert verdict == ChainVerdict(True, 5, envelopes[-1]["hash"], bad_seq=None, problem=None)
    assert envelopes[0]["prev_hash"] == "0" * 64


@pytest.mark.parametrize("field,value", [
    ("payload", {"note": "event 3 (edited)"}), ("actor", {"subject": "mallory", "roles": ["admin"]}),
    ("recorded_at", "2026-11-22T10:00:00.000002Z"), ("type", "run.succeeded"),
    ("tenant_id", "other"), ("hash", "f" * 64),
])
def test_tampering_any_field_names_the_tampered_seq(field, value):
    envelopes = chain(5)
    envelopes[2] = {**envelopes[2], field: value}
    verdict = verify_chain("acme", envelopes)
    assert (verdict.ok, verdict.bad_seq, verdict.count) == (False, 3, 2)


def test_flipping_one_byte_of_the_record_is_detected():
    envelopes = chain(3)
    raw = bytearray(json.dumps(envelopes[1]).encode())
    index = raw.index(b"event 2") + 6
    raw[index] = ord("3")
    envelopes[1] = json.loads(raw)
    assert verify_chain("acme", envelopes).bad_seq == 2


def test_gap_duplicate_and_reordering_are_named():
    envelopes = chain(4)
    assert verify_chain("acme", envelopes[:2] + envelopes[3:]).bad_seq == 3
    dup = verify_chain("acme", envelopes[:3] + [envelopes[2]] + envelopes[3:])
    assert (dup.bad_seq, "duplicate" in dup.problem) == (4, True)
    assert verify_chain("acme", [envelopes[1], envelopes[0]]).bad_seq == 1


def test_rehashing_a_tampered_event_breaks_the_next_link():
    envelopes = copy.deepcopy(chain(4))
    envelopes[1] = seal({**envelopes[1], "payload": {"note": "forged"}})
    verdict = verify_chain("acme", envelopes)
    assert verdict.bad_seq == 3 and "prev_hash" in verdict.problem


def test_envelope_model_accepts_a_sealed_envelope_and_rejects_extras():
    env = chain(1)[0]
    assert Envelope.model_validate(env).hash == env["hash"]
    with pytest.raises(ValueError):
        Envelope.model_validate({**env, "extra": 1})


def test_cloudevents_binary_headers():
    env = chain(1)[0]
    headers = dict(cloudevents_headers(env))
    assert headers == {
        "ce_specversion": b"1.0", "ce_id": env["event_id"].encode(),
        "ce_source": b"/runledger/tenants/acme", "ce_type": b"dev.runledger.run.started",
        "ce_time": b"2026-11-22T10:00:00.000001Z",
        "ce_subject": b"run/01a20000-0000-7000-8000-000000000001",
        "content-type": b"application/json"}


def random_value(rng, depth=0):
    import string
    kinds = ["str", "int", "bool", "none"] + (["dict", "list"] if depth < 3 else [])
    kind = rng.choice(kinds)
    alphabet = string.printable + "\x00\x01\x1f\x7f\"\\/é€𝄞\u2028"
    if kind == "str":
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if kind == "int":
        return rng.choice([0, -1, 2**53 - 1, -(2**53 - 1), rng.randint(-10**12, 10**12)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"".join(rng.choice("abcXYZ_é𝄞") for _ in range(rng.randint(1, 5))): random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


def test_the_fast_canonical_form_equals_rfc8785_on_thousands_of_random_envelopes():
    import random
    import rfc8785
    from schemas.envelope import canonical
    rng = random.Random(8785)
    for _ in range(3000):
        env = unsealed(rng.randint(1, 10**6), "a" * 64, **{f"k{i}": random_value(rng) for i in range(4)})
        assert canonical(env) == rfc8785.dumps(env)


def test_floats_and_unsafe_integers_take_the_strict_path():
    import rfc8785
    from schemas.envelope import canonical
    assert canonical(unsealed(1, GENESIS_HASH, amount=1.5)) == rfc8785.dumps(unsealed(1, GENESIS_HASH, amount=1.5))
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical(unsealed(1, GENESIS_HASH, amount=2**53))


def test_the_record_value_is_the_envelope_as_json():
    env = chain(2)[1]
    from schemas.envelope import encode
    assert json.loads(encode(env)) == dict(env)
