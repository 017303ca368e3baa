"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, and tlog checkpoints (c2sp.org/tlog-checkpoint).

A note: a text ending in a newline, a blank line, signature lines `— <key name> <base64(key ID ‖ signature)>`,
key ID = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ Ed25519 public key)[:4]. A public key is published as a vkey,
`<name>+<hex key ID>+<base64(0x01 ‖ public key)>`. A checkpoint's text: origin (ours `runledger/<deployment>/
<tenant>`, also the log key's name), tree size in decimal, base64 RFC 6962 root, optional extension lines.
Byte for byte golang.org/x/mod/sumdb/note's (tests/vectors/notes.json), but stricter in one thing: every
signature line of a known key is verified (the spec's MUST; Go checks the first of duplicates only).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
MAX_SIGNATURES = 100   # golang.org/x/mod/sumdb/note's limit; the spec asks for at least 16
DASH = "— "            # U+2014 EM DASH, U+0020 SPACE
# Unicode's White_Space property: what Go's unicode.IsSpace refuses in a key name.
WHITE_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_SIZE = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A note, key or checkpoint refused; the message says why."""


class MalformedNote(NoteError):
    """Not a note: bad UTF-8, a control character, no blank line, a bad signature line."""


class MalformedKey(NoteError):
    """Not a vkey, skey or Ed25519 key."""


class MalformedCheckpoint(NoteError):
    """A note whose text is not a checkpoint (or not the one expected)."""


class AmbiguousKey(NoteError):
    """Two verifiers given with the name and key ID of a signature."""


class UnknownKey(NoteError):
    """No signature by a key the verifier knows; `signatures` are the ones the note has."""

    def __init__(self, message: str, signatures: Sequence[Signature] = ()):
        super().__init__(message)
        self.signatures = list(signatures)


class BadSignature(NoteError):
    def __init__(self, name: str, key_id: int):
        super().__init__(f"invalid signature for key {name}+{key_id:08x}")
        self.name, self.key_id = name, key_id


def valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no plus, no control character."""
    return bool(name) and not any(c in WHITE_SPACE or c == "+" or c < " " for c in name)


def _text_problem(text: str) -> str | None:
    bad = next((i for i, c in enumerate(text) if c < " " and c != "\n" or "\ud800" <= c <= "\udfff"), None)
    return None if bad is None else f"character U+{ord(text[bad]):04X} at offset {bad} (only newline may be below U+0020)"


def key_id(name: str, public_key: bytes, algorithm: int = ED25519) -> int:
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key).digest()[:4], "big")


def _b64(text: str, what: str, error: type[NoteError]) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{what} is not standard padded base64: {text[:80]!r}") from None


@dataclass(frozen=True)
class Signature:
    """One signature line: who (name, key ID) and the signature bytes (after the 4-byte key ID)."""
    name: str
    key_id: int
    signature: bytes

    @property
    def key(self) -> str:
        return f"{self.name}+{self.key_id:08x}"

    def line(self) -> str:
        return f"{DASH}{self.name} {base64.b64encode(self.key_id.to_bytes(4, 'big') + self.signature).decode()}\n"


class Verifier:
    """A public key with its name: checks signatures, and publishes itself as a vkey."""

    def __init__(self, name: str, public_key: Ed25519PublicKey | bytes):
        if not valid_name(name):
            raise MalformedKey(f"key name {name!r} is empty or has a space, a plus or a control character")
        if isinstance(public_key, (bytes, bytearray)):
            if len(public_key) != 32:
                raise MalformedKey(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
            public_key = Ed25519PublicKey.from_public_bytes(bytes(public_key))
        self.name, self._key = name, public_key
        self.public_key = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, self.public_key)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(bytes([ED25519]) + self.public_key).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        name, _, rest = vkey.partition("+")
        hex_id, _, key64 = rest.partition("+")
        if not _HEX8.fullmatch(hex_id) or not valid_name(name):
            raise MalformedKey(f"a vkey is <name>+<8 hex digits>+<base64 key>, not {vkey[:120]!r}")
        key = _b64(key64, "the vkey's key", MalformedKey)
        if not key or int(hex_id, 16) != key_id(name, key[1:], key[0]):
            raise MalformedKey(f"the vkey's key ID {hex_id} is not that of its name and key")
        if key[0] != ED25519 or len(key) != 33:
            raise MalformedKey(f"the vkey's key is not an Ed25519 key (type 0x{key[0]:02x}, {len(key) - 1} bytes)")
        return cls(name, key[1:])

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """An Ed25519 private key with its name (for a checkpoint: the log's origin)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey | bytes):
        if isinstance(private_key, (bytes, bytearray)):
            if len(private_key) != 32:
                raise MalformedKey(f"an Ed25519 private key (seed) is 32 bytes, not {len(private_key)}")
            private_key = Ed25519PrivateKey.from_private_bytes(bytes(private_key))
        self._key = private_key
        self.verifier = Verifier(name, private_key.public_key())
        self.name, self.key_id, self.vkey = name, self.verifier.key_id, self.verifier.vkey

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """golang.org/x/mod/sumdb/note's private key text: PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ seed)>."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
            raise MalformedKey("a signer key is PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>")
        key = _b64(parts[4], "the signer key", MalformedKey)
        if len(key) != 33 or key[0] != ED25519:
            raise MalformedKey("the signer key is not an Ed25519 seed")
        signer = cls(parts[2], key[1:])
        if signer.key_id != int(parts[3], 16):
            raise MalformedKey(f"the signer key's ID {parts[3]} is not that of its name and key")
        return signer

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """The signed note: text (ending in a newline), a blank line, one signature line per signer."""
    if not text.endswith("\n") or (problem := _text_problem(text)):
        raise MalformedNote(f"the text has a {problem}" if text.endswith("\n") else "a note's text ends in a newline")
    if not signers:
        raise MalformedNote("a signed note needs at least one signer")
    message = text.encode()
    lines = [Signature(s.name, s.key_id, s.sign(message)).line() for s in signers]
    return (text + "\n" + "".join(lines)).encode()


def parse_note(note: bytes) -> tuple[str, list[Signature]]:
    """The text and signature lines of a note, checked for form only (nothing verified)."""
    try:
        whole = note.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedNote(f"the note is not UTF-8 (byte {error.start})") from None
    if problem := _text_problem(whole):
        raise MalformedNote(f"the note has a {problem}")
    split = whole.rfind("\n\n")
    if split < 0:
        raise MalformedNote("no blank line before the signature lines")
    text, block = whole[:split + 1], whole[split + 2:]
    if not block.endswith("\n"):
        raise MalformedNote("the signature lines do not end in a newline" if block else "no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"{len(lines)} signature lines, more than {MAX_SIGNATURES}")
    signatures = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(DASH):
            raise MalformedNote(f"signature line {number} does not start with an em dash and a space: {line[:80]!r}")
        name, _, b64 = line[len(DASH):].partition(" ")
        if not valid_name(name):
            raise MalformedNote(f"signature line {number}: key name {name!r} is empty or has a space or a plus")
        raw = _b64(b64, f"signature line {number}", MalformedNote)
        if len(raw) < 5:
            raise MalformedNote(f"signature line {number} has {len(raw)} bytes, not a key ID and a signature")
        signatures.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> tuple[str, list[Verifier]]:
    """The note's text and the verifiers whose signatures on it verified (in the note's order, once each).

    Signatures of keys not among `verifiers` are ignored; any signature of a known key that fails is
    BadSignature; none of a known key is UnknownKey."""
    text, signatures = parse_note(note)
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    message, verified = text.encode(), []
    for sig in signatures:
        candidates = known.get((sig.name, sig.key_id), [])
        if len(candidates) > 1:
            raise AmbiguousKey(f"ambiguous key {sig.key}: {len(candidates)} verifiers have that name and ID")
        if not candidates:
            continue
        if not candidates[0].verify(message, sig.signature):
            raise BadSignature(sig.name, sig.key_id)
        if candidates[0] not in verified:
            verified.append(candidates[0])
    if not verified:
        knows = ", ".join(f"{name}+{kid:08x}" for name, kid in known) or "none"
        raise UnknownKey(f"no signature by a known key: signed by {', '.join(s.key for s in signatures)}; "
                         f"known keys: {knows}", signatures)
    return text, verified


def tenant_origin(deployment: str, tenant: str) -> str:
    """Our checkpoints' origin (and log key name): runledger/<deployment>/<tenant>."""
    for what, part in (("deployment", deployment), ("tenant", tenant)):
        if not valid_name(part) or "/" in part:
            raise ValueError(f"{what} {part!r} cannot be part of an origin (empty, a space, a plus or a slash)")
    return f"runledger/{deployment}/{tenant}"


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint: the log's origin, its tree size and RFC 6962 root, optional extension lines."""
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for what, line in (("origin", self.origin), *(("extension line", e) for e in self.extensions)):
            if not isinstance(line, str) or not line or "\n" in line or _text_problem(line):
                raise MalformedCheckpoint(f"the {what} {line!r} is empty or has a control character")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < 2 ** 64:
            raise MalformedCheckpoint(f"tree size {self.size!r} is not a 64-bit unsigned number")
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise MalformedCheckpoint("the root is a 32-byte SHA-256 hash")

    def to_text(self) -> str:
        return "".join(f"{line}\n" for line in (self.origin, str(self.size),
                                                 base64.b64encode(self.root).decode(), *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if lines[-1] or len(lines) < 4:
            raise MalformedCheckpoint("a checkpoint is 3 lines or more, each ending in a newline")
        origin, size, root, *extensions = lines[:-1]
        if not _SIZE.fullmatch(size):
            raise MalformedCheckpoint(f"tree size {size[:40]!r} is not a decimal number without leading zeros")
        digest = _b64(root, "the root hash", MalformedCheckpoint)
        if len(digest) != 32 or base64.b64encode(digest).decode() != root:
            raise MalformedCheckpoint(f"the root hash {root[:60]!r} is not the base64 of 32 bytes")
        return cls(origin, int(size), digest, tuple(extensions))

    def sign(self, signers: Sequence[Signer]) -> bytes:
        return sign_note(self.to_text(), signers)

    @classmethod
    def open(cls, note: bytes, verifiers: Iterable[Verifier], origin: str | None = None
             ) -> tuple[Checkpoint, list[Verifier]]:
        """The checkpoint and who signed it, if a known key named as its origin (the log's) did; of `origin`."""
        text, verified = open_note(note, verifiers)
        checkpoint = cls.parse(text)
        if origin is not None and checkpoint.origin != origin:
            raise MalformedCheckpoint(f"the checkpoint's origin is {checkpoint.origin!r}, expected {origin!r}")
        if not any(v.name == checkpoint.origin for v in verified):
            raise UnknownKey(f"no verified signature by the log's key {checkpoint.origin!r}; verified: "
                             f"{', '.join(f'{v.name}+{v.key_id:08x}' for v in verified)}")
        return checkpoint, verified
