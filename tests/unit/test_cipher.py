"""Content sealing (AES-256-GCM), key wrapping (RFC 3394) against public vectors, and the KEK settings."""
import base64
import json

import pytest
import rfc8785
from pydantic import SecretStr, ValidationError

from infra.adapters.keys import keks_from_settings
from infra.adapters.keys import cipher
from infra.adapters.keys.cipher import (SHREDDED, KeyUnwrapError, NotSealed, SealTampered, b64url, content_aad,
                                        is_sealed, open_bytes, open_sealed, seal, seal_bytes, unwrap_key, wrap_key)
from infra.adapters.settings import KEK_HOWTO, Settings

# RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK.
RFC3394_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
RFC3394_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
RFC3394_WRAPPED = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")

# Test Case 16 of the GCM specification (McGrew & Viega, as submitted to NIST): AES-256, 96-bit IV, with AAD.
GCM_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_IV = bytes.fromhex("cafebabefacedbaddecaf888")
GCM_AAD = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_PLAIN = bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                          "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
GCM_CIPHER = bytes.fromhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                           "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662")
GCM_TAG = bytes.fromhex("76fc6ece0f4e1768cddf8853bb2d551b")

KEY = bytes(range(32))
AAD = content_aad("acme", "user:42", "dk_1")
SECRET = "k" * 40
KEK_TEXT = base64.b64encode(bytes(range(7, 39))).decode()


def test_key_wrap_matches_rfc_3394_section_4_6():
    assert (wrap_key(RFC3394_KEK, RFC3394_KEY), unwrap_key(RFC3394_KEK, RFC3394_WRAPPED)) == (RFC3394_WRAPPED,
                                                                                            RFC3394_KEY)


def test_a_wrapped_key_altered_or_under_another_kek_does_not_unwrap():
    altered = bytes([RFC3394_WRAPPED[0] ^ 1]) + RFC3394_WRAPPED[1:]
    for kek, wrapped in ((RFC3394_KEK, altered), (GCM_KEY, RFC3394_WRAPPED), (RFC3394_KEK, RFC3394_WRAPPED[:32])):
        with pytest.raises(KeyUnwrapError):
            unwrap_key(kek, wrapped)


def test_sealing_is_aes_256_gcm_as_in_the_gcm_specifications_test_case_16(monkeypatch):
    monkeypatch.setattr(cipher, "new_nonce", lambda: GCM_IV)
    sealed = seal_bytes(GCM_PLAIN, "kid-16", GCM_KEY, GCM_AAD)
    assert sealed == {"alg": "A256GCM", "kid": "kid-16", "iv": b64url(GCM_IV), "ct": b64url(GCM_CIPHER + GCM_TAG)}
    assert open_bytes(sealed, GCM_KEY, GCM_AAD) == GCM_PLAIN


def test_a_sealed_text_is_four_json_strings_the_hash_rule_canonicalises_and_it_opens():
    sealed = seal("Grüße, 日本 \u2028 \"quoted\"", "dk_1", KEY, AAD)
    assert (sorted(sealed), sealed["alg"], sealed["kid"]) == (["alg", "ct", "iv", "kid"], "A256GCM", "dk_1")
    assert json.loads(rfc8785.dumps(sealed)) == sealed
    assert ("=" in sealed["iv"] + sealed["ct"], len(cipher.unb64url(sealed["iv"]))) == (False, 12)
    assert open_sealed(sealed, KEY, AAD) == "Grüße, 日本 \u2028 \"quoted\""


def test_each_seal_draws_a_fresh_nonce():
    first, second = seal("same", "dk_1", KEY, AAD), seal("same", "dk_1", KEY, AAD)
    assert (first["iv"] == second["iv"], first["ct"] == second["ct"]) == (False, False)


def test_without_its_key_a_sealed_field_reads_as_the_shredded_placeholder():
    assert (open_sealed(seal("secret", "dk_1", KEY, AAD), None, AAD), SHREDDED) == ("[shredded]", "[shredded]")


@pytest.mark.parametrize("change", ["ct", "iv", "tag", "tenant", "subject", "kid", "key"])
def test_a_changed_ciphertext_context_or_key_raises_seal_tampered(change):
    sealed = seal("secret", "dk_1", KEY, AAD)
    ct = base64.urlsafe_b64decode(sealed["ct"] + "==")
    aad, key = AAD, KEY
    if change in ("ct", "tag"):
        at = 0 if change == "ct" else len(ct) - 1
        sealed["ct"] = b64url(ct[:at] + bytes([ct[at] ^ 1]) + ct[at + 1:])
    elif change == "iv":
        sealed["iv"] = b64url(bytes(12))
    elif change == "tenant":
        aad = content_aad("other", "user:42", "dk_1")
    elif change == "subject":
        aad = content_aad("acme", "user:43", "dk_1")
    elif change == "kid":
        sealed["kid"], aad = "dk_2", content_aad("acme", "user:42", "dk_2")
    else:
        key = bytes(range(1, 33))
    with pytest.raises(SealTampered):
        open_sealed(sealed, key, aad)


def test_is_sealed_tells_a_sealed_field_from_anything_else():
    sealed = seal("x", "dk_1", KEY, AAD)
    others = ["x", None, 3, {}, {**sealed, "extra": "1"}, {**sealed, "alg": "A128GCM"}, {**sealed, "kid": ""},
              {**sealed, "iv": 12}, {k: v for k, v in sealed.items() if k != "ct"}]
    assert [is_sealed(v) for v in [sealed, *others]] == [True] + [False] * len(others)


@pytest.mark.parametrize("value", ["plain", {"alg": "A256GCM", "kid": "k", "iv": "!!", "ct": "AAAA"},
                                   {"alg": "A256GCM", "kid": "k", "iv": "AAAA", "ct": "A" * 40},
                                   {"alg": "A256GCM", "kid": "k", "iv": "AAAAAAAAAAAAAAAA", "ct": "AAAA"}])
def test_what_is_not_a_well_formed_sealed_field_raises_not_sealed(value):
    with pytest.raises(NotSealed):
        open_sealed(value, KEY, AAD)


def test_the_aad_binds_tenant_subject_and_key_id_unambiguously():
    assert content_aad("t", "s", "k") == b'["runledger.content.v1","t","s","k"]'
    assert content_aad("a", 'b","c', "k") != content_aad('a","b', "c", "k")
    with pytest.raises(ValueError, match="subject"):
        content_aad("t", "", "k")


# -- the KEK in settings -------------------------------------------------------------------------

def test_the_kek_is_optional_and_named_kek_1_by_default(monkeypatch):
    for name in ("RUNLEDGER_KEK", "RUNLEDGER_KEK_ID", "RUNLEDGER_PREVIOUS_KEKS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(jwt_secret=SECRET)
    assert (settings.kek, settings.kek_id, settings.previous_keks, keks_from_settings(settings)) == (
        None, "kek-1", {}, None)


def test_the_kek_ring_comes_from_the_environment_and_never_shows(monkeypatch):
    old = base64.b64encode(bytes(range(50, 82))).decode()
    monkeypatch.setenv("RUNLEDGER_KEK", KEK_TEXT)
    monkeypatch.setenv("RUNLEDGER_KEK_ID", "kek-2")
    monkeypatch.setenv("RUNLEDGER_PREVIOUS_KEKS", json.dumps({"kek-1": old}))
    settings = Settings(jwt_secret=SECRET)
    assert keks_from_settings(settings) == ({"kek-1": bytes(range(50, 82)), "kek-2": bytes(range(7, 39))}, "kek-2")
    shown = repr(settings) + str(settings) + settings.model_dump_json() + repr(settings.model_dump())
    assert (KEK_TEXT in shown, old in shown, "**********" in shown) == (False, False, True)


@pytest.mark.parametrize("kek, why", [
    ("changeme", "placeholder"), ("secret", "placeholder"),
    (base64.b64encode(bytes(range(16))).decode(), "decodes to 16 bytes, not 32"),
    ("not base64 at all!", "not base64"),
    (base64.b64encode(bytes(32)).decode(), "one byte repeated"),
])
def test_placeholder_or_malformed_keks_are_refused_with_how_to_make_one(kek, why):
    with pytest.raises(ValidationError) as refused:
        Settings(jwt_secret=SECRET, kek=kek)
    message = str(refused.value)
    assert (why in message, "RUNLEDGER_KEK" in message, KEK_HOWTO in message, kek in message) == (
        True, True, True, False)


def test_previous_keks_are_checked_like_the_current_one_and_need_it():
    cases = [({"kek": KEK_TEXT, "previous_keks": {"kek-0": "changeme"}}, "RUNLEDGER_PREVIOUS_KEKS['kek-0']"),
             ({"kek": KEK_TEXT, "previous_keks": {"bad id": KEK_TEXT}}, "does not match"),
             ({"previous_keks": {"kek-0": KEK_TEXT}}, "without RUNLEDGER_KEK"),
             ({"kek": KEK_TEXT, "previous_keks": {"kek-1": KEK_TEXT}}, "need different ids")]
    for values, why in cases:
        with pytest.raises(ValidationError, match=why.replace("[", r"\[").replace("]", r"\]")):
            Settings(jwt_secret=SECRET, **values)
    assert Settings(jwt_secret=SECRET, kek=SecretStr(KEK_TEXT)).kek.get_secret_value() == KEK_TEXT
