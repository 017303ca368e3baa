"""Content sealing (AES-256-GCM) and data-key wrapping (AES key wrap, RFC 3394) — docs/adr/0008.

A sealed field is a JSON object of exactly four strings, safe for the hash rule (no numbers):

    {"alg": "A256GCM", "kid": <data key id>, "iv": <base64url, no padding, 12 bytes>,
     "ct": <base64url, no padding: AES-GCM ciphertext followed by its 16-byte tag>}

The additional authenticated data is never stored: reader and writer both build it with
`content_aad(tenant_id, subject, key_id)`, so a ciphertext moved to another tenant, another subject
or under another key id no longer opens (SealTampered). Opening with no key (the subject's keys
were shredded) gives the SHREDDED placeholder instead of the plaintext.

Data keys are wrapped under the KEK with AES key wrap (RFC 3394, `aes_key_wrap`): 32 bytes in,
40 bytes out, deterministic, with its own integrity check, so a wrong KEK is detected on unwrap.
"""
import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

ALG = "A256GCM"
FIELDS = frozenset({"alg", "kid", "iv", "ct"})
SHREDDED = "[shredded]"  # what a read model shows for content whose data key was shredded
KEY_BYTES = 32  # data keys and KEKs are both 256-bit
IV_BYTES = 12
TAG_BYTES = 16
AAD_CONTEXT = "runledger.content.v1"


class SealError(ValueError):
    """Base of what opening a sealed field can raise."""


class NotSealed(SealError):
    """The value is not a sealed field of a known algorithm (a plain value, or a malformed one)."""


class SealTampered(SealError):
    """The ciphertext, its iv, its kid or the context (tenant, subject) it was sealed for changed."""


class KeyUnwrapError(ValueError):
    """A wrapped data key does not unwrap under the KEK given: a wrong KEK, or altered bytes."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise NotSealed("a sealed field's iv and ct are base64url strings without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise NotSealed("a sealed field's iv and ct are base64url strings without padding") from None


def content_aad(tenant_id: str, subject: str, key_id: str) -> bytes:
    """The AAD of a content field: tenant, data subject and key id, unambiguously encoded (a JSON array)."""
    for name, value in (("tenant_id", tenant_id), ("subject", subject), ("key_id", key_id)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"content_aad needs a non-empty {name}")
    return json.dumps([AAD_CONTEXT, tenant_id, subject, key_id], ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def new_nonce() -> bytes:
    """A fresh random 96-bit nonce (NIST SP 800-38D: at most 2^32 seals per key; one key per subject)."""
    return os.urandom(IV_BYTES)


def check_key(key: bytes, what: str = "data key") -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise ValueError(f"a {what} is {KEY_BYTES} bytes")
    return bytes(key)


def is_sealed(value: Any) -> bool:
    """Whether value has the shape of a sealed field (exactly alg, kid, iv, ct as strings; alg known)."""
    return (isinstance(value, dict) and value.keys() == FIELDS and value.get("alg") == ALG
            and all(isinstance(value[f], str) for f in FIELDS) and value["kid"] != "")


def seal_bytes(data: bytes, key_id: str, key: bytes, aad: bytes) -> dict[str, str]:
    if not isinstance(key_id, str) or not key_id:
        raise ValueError("a sealed field needs a key id")
    iv = new_nonce()
    ct = AESGCM(check_key(key)).encrypt(iv, data, aad)
    return {"alg": ALG, "kid": key_id, "iv": b64url(iv), "ct": b64url(ct)}


def open_bytes(obj: Any, key: bytes | None, aad: bytes) -> bytes | None:
    """Return the plaintext bytes, or None when key is None (shredded). Raises NotSealed, SealTampered."""
    if not is_sealed(obj):
        raise NotSealed(f"not a sealed field: expected an object with exactly {sorted(FIELDS)} and alg {ALG}")
    iv, ct = unb64url(obj["iv"]), unb64url(obj["ct"])
    if len(iv) != IV_BYTES or len(ct) < TAG_BYTES:
        raise NotSealed(f"a sealed field has a {IV_BYTES}-byte iv and a ct of at least {TAG_BYTES} bytes")
    if key is None:
        return None
    try:
        return AESGCM(check_key(key)).decrypt(iv, ct, aad)
    except InvalidTag:
        raise SealTampered(f"sealed field under key {obj['kid']} does not authenticate: its ciphertext, iv, "
                           f"kid or context (tenant, subject) was changed, or the key is not its key") from None


def seal(plaintext: str, key_id: str, key: bytes, aad: bytes) -> dict[str, str]:
    """Seal a text field; aad must be `content_aad(tenant_id, subject, key_id)`."""
    if not isinstance(plaintext, str):
        raise TypeError("seal takes text; encode other values first")
    return seal_bytes(plaintext.encode("utf-8"), key_id, key, aad)


def open_sealed(obj: Any, key: bytes | None, aad: bytes) -> str:
    """The plaintext of a sealed text field, or SHREDDED when its key is gone (key is None)."""
    data = open_bytes(obj, key, aad)
    if data is None:
        return SHREDDED
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SealTampered("a sealed text field opened to bytes that are not UTF-8") from None


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """Wrap a 32-byte data key under a 32-byte KEK (RFC 3394): 40 bytes."""
    return aes_key_wrap(check_key(kek, "KEK"), check_key(key))


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    try:
        key = aes_key_unwrap(check_key(kek, "KEK"), bytes(wrapped))
    except (InvalidUnwrap, ValueError):
        raise KeyUnwrapError("the wrapped data key does not unwrap under this KEK (wrong KEK or altered bytes)") \
            from None
    return check_key(key)
