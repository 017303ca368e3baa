"""Verifying what is on the log: record bytes → decode → chain check, exactly as strict as the hash rule."""
import hashlib
import json
import random

import pytest
import rfc8785

from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import GENESIS_HASH, Plain, compute_hash, decode, encode, needs_full_jcs, seal
from tests.unit.test_envelope import chain, random_value, unsealed


def records(n: int) -> list[bytes]:
    return [encode(env) for env in chain(n)]


def verdict_of(values: list[bytes]):
    return verify_chain("acme", [decode(v) for v in values])


def spliced(text: bytes) -> bytes:
    """A record the way seal() writes one, but around any text, hashed as that text."""
    digest = hashlib.sha256(text).hexdigest()
    return text[:-1] + b',"hash":"' + digest.encode() + b'"}'


def test_records_as_sealed_decode_plain_and_verify():
    values = records(4)
    assert all(type(decode(v)) is Plain for v in values)
    verdict = verdict_of(values)
    assert verdict == ChainVerdict(True, 4, json.loads(values[-1])["hash"], bad_seq=None, problem=None)


def test_changing_any_single_byte_of_a_record_is_refused():
    values = records(3)
    original, checked = values[1], 0
    for index in range(len(original)):
        tampered = bytearray(original)
        tampered[index] ^= 0x01
        try:
            envelope = decode(bytes(tampered))
        except ValueError:
            continue  # no longer JSON: refused before the chain check
        verdict = verify_chain("acme", [decode(values[0]), envelope, decode(values[2])])
        assert (verdict.ok, verdict.bad_seq) == (False, 2), f"byte {index} changed, not detected"
        checked += 1
    assert checked > len(original) // 2


def test_a_tampered_payload_byte_names_the_hash():
    values = records(3)
    values[1] = values[1].replace(b"event 2", b"event 9")
    verdict = verdict_of(values)
    assert (verdict.bad_seq, verdict.problem.startswith("hash ")) == (2, True)


def test_a_tampered_prev_hash_names_the_link():
    values = records(3)
    prev = json.loads(values[1])["prev_hash"]
    forged = ("1" if prev[0] == "0" else "0") + prev[1:]
    values[1] = values[1].replace(f'"prev_hash":"{prev}"'.encode(), f'"prev_hash":"{forged}"'.encode())
    verdict = verdict_of(values)
    assert (verdict.bad_seq, "prev_hash" in verdict.problem) == (2, True)


def test_a_record_whose_hash_suffix_is_wrong_is_refused():
    values = records(2)
    good = json.loads(values[1])["hash"]
    values[1] = values[1].replace(good.encode(), ("f" * 64).encode())
    verdict = verdict_of(values)
    assert (verdict.bad_seq, f"computed {good}" in verdict.problem) == (2, True)


def test_a_foreign_producer_with_other_key_order_and_whitespace_verifies():
    envelopes = chain(3)
    foreign = [json.dumps(dict(reversed(list(e.items()))), indent=2).encode() for e in envelopes]
    assert all(f != encode(e) and json.loads(f) == e for f, e in zip(foreign, envelopes))
    assert verdict_of(foreign) == ChainVerdict(True, 3, envelopes[-1]["hash"])


def test_a_record_hashed_over_its_own_non_canonical_text_is_refused():
    # sha256(record minus its hash suffix) matches, but that text is not RFC 8785, so the rule fails.
    body = unsealed(1, GENESIS_HASH, note="event 1")
    value = spliced(json.dumps(dict(reversed(list(body.items())))).encode())
    verdict = verdict_of([value])
    assert (verdict.ok, verdict.bad_seq, verdict.problem.startswith("hash ")) == (False, 1, True)


def test_floats_are_hashed_by_rfc8785_not_by_their_python_spelling():
    body = unsealed(1, GENESIS_HASH, ratio=1.0, big=1e21)
    sealed = seal(body)
    assert type(decode(encode(sealed))) is dict
    assert verdict_of([encode(sealed)]) == ChainVerdict(True, 1, sealed["hash"])
    python_spelling = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert python_spelling != rfc8785.dumps(body)
    assert verdict_of([spliced(python_spelling)]).bad_seq == 1


def test_unsafe_integers_still_take_the_strict_path_and_are_refused_by_it():
    value = spliced(json.dumps(unsealed(1, GENESIS_HASH, n=2**53), sort_keys=True, separators=(",", ":")).encode())
    envelope = decode(value)
    assert type(envelope) is dict
    with pytest.raises(rfc8785.IntegerDomainError):
        compute_hash(envelope)


def test_decode_is_plain_exactly_when_no_full_jcs_is_needed_and_hashes_agree():
    rng = random.Random(53)
    extremes = [1.5, -0.0, 2**53, -(2**53), 2**53 - 1, float("inf")]
    for _ in range(2000):
        payload = {f"k{i}": random_value(rng) for i in range(3)}
        if rng.random() < 0.2:
            payload["x"] = rng.choice(extremes)
        value = json.dumps(unsealed(7, "a" * 64, **payload), ensure_ascii=rng.random() < 0.5).encode()
        envelope = decode(value)
        assert envelope == json.loads(value)
        assert (type(envelope) is Plain) == (not needs_full_jcs(envelope))
        if type(envelope) is Plain:
            assert compute_hash(envelope) == compute_hash(json.loads(value))


def test_decode_refuses_exactly_what_json_refuses():
    for value in (b"", b"{", b'{"a":1}x', b"\xff{}", b"[1]", b'"text"', b"\xef\xbb\xbf{}"):
        try:
            expected = json.loads(value)
        except ValueError as error:
            with pytest.raises(type(error)):
                decode(value)
        else:
            assert decode(value) == expected and isinstance(decode(value), type(expected))
