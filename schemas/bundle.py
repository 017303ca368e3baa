"""Evidence bundles: the format (docs/evidence.md) and the offline verifier.

A bundle is one uncompressed POSIX tar file: events.jsonl (RFC 8785 envelopes, chain order), proofs.jsonl
(an RFC 9162 inclusion proof per event), checkpoint.note (the C2SP signed checkpoint), checkpoints.jsonl
(every earlier checkpoint with a consistency proof to it), governance.json, record.md and, last,
manifest.json (what it is, and the SHA-256 of every other member). `verify_bundle` checks one from the file
alone; `verify_extends` proves a later bundle extends an earlier one. Every problem names its place.
"""
from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import rfc8785

from schemas.envelope import Plain, needs_full_jcs
from schemas.merkle import ProofError, check_consistency
from schemas.notes import BadSignature, Checkpoint, NoteError, UnknownKey, Verifier

FORMAT, VERSION = "runledger-evidence-bundle", 1
MEMBERS = ("events.jsonl", "proofs.jsonl", "checkpoint.note", "checkpoints.jsonl", "governance.json", "record.md")
MANIFEST = "manifest.json"
GOVERNANCE_TYPES = frozenset({"legal_hold.placed", "legal_hold.released", "retention.swept",
                              "retention.subject_shredded"})
MAX_PROBLEMS = 50


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON (json.dumps with sorted keys where that is the same thing, as in envelope.py)."""
    if isinstance(value, Plain) or not needs_full_jcs(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if text.isascii():
            return text.encode()
    return rfc8785.dumps(value)


class BundleUnreadable(Exception):
    """Not a bundle this verifier can read (exit 2): not a tar, a member or manifest field missing."""


class KeyUnusable(ValueError):
    """--key is neither a vkey nor a file holding one."""


def load_key(text: str) -> Verifier:
    """A verifier from a vkey, or from a file holding one."""
    try:
        return Verifier.from_vkey(text.strip())
    except NoteError as error:
        problem = error
    try:
        return Verifier.from_vkey(Path(text).read_text().strip())
    except FileNotFoundError:
        raise KeyUnusable(f"--key {text[:80]!r} is neither a vkey ({problem}) nor a file") from None
    except (OSError, UnicodeDecodeError, NoteError) as error:
        raise KeyUnusable(f"--key file {text[:80]!r}: {error}") from None


@dataclass
class Report:
    manifest: dict
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: int = 0
    events: int = 0
    size: int = 0
    root: bytes = b""
    key: str = ""
    earlier: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)
        else:
            self.dropped += 1


class Bundle:
    """An opened bundle file: its manifest, and its members read whole or line by line."""

    def __init__(self, path: str | Path):
        try:
            self._tar = tarfile.open(path, "r:")
            self._infos = {info.name: info for info in self._tar.getmembers() if info.isfile()}
        except (OSError, tarfile.TarError) as error:
            raise BundleUnreadable(f"{path}: not a readable bundle (uncompressed tar): {error}") from None
        missing = [m for m in (MANIFEST, *MEMBERS) if m not in self._infos]
        if missing:
            raise BundleUnreadable(f"{path}: not a bundle: no {', '.join(missing)}")
        try:
            self.manifest = json.loads(self.read(MANIFEST))
            assert self.manifest["format"] == FORMAT, f"format is {self.manifest['format']!r}, not {FORMAT!r}"
            assert self.manifest["version"] == VERSION, f"format version {self.manifest['version']!r} is not {VERSION}"
            for key, kind in (("tenant", str), ("origin", str), ("scope", dict), ("checkpoint", dict),
                              ("members", dict), ("counts", dict)):
                assert isinstance(self.manifest.get(key), kind), f"no {key!r} ({kind.__name__})"
            self.size = int(self.manifest["checkpoint"]["size"])
            self.root = base64.b64decode(self.manifest["checkpoint"]["root"], validate=True)
        except (ValueError, KeyError, TypeError, AssertionError) as error:
            raise BundleUnreadable(f"{path}: manifest.json unreadable: {error}") from None

    def read(self, name: str) -> bytes:
        return self._tar.extractfile(self._infos[name]).read()

    def lines(self, name: str) -> Iterator[bytes]:
        yield from self._tar.extractfile(self._infos[name])

    def digest(self, name: str) -> str:
        return hashlib.file_digest(self._tar.extractfile(self._infos[name]), "sha256").hexdigest()

    def names(self) -> list[str]:
        return list(self._infos)

    def close(self) -> None:
        self._tar.close()


def _check_digests(b: Bundle, r: Report) -> None:
    listed = b.manifest["members"]
    for name in b.names():
        entry = listed.get(name)
        if name != MANIFEST and entry is None:
            r.fail(f"manifest: member {name} is not listed")
        elif name != MANIFEST and (not isinstance(entry, dict) or b.digest(name) != entry.get("sha256")):
            r.fail(f"manifest: {name} digest mismatch")
    for name in set(listed) - set(b.names()):
        r.fail(f"manifest: lists {name}, which is not in the bundle")


def _check_checkpoint(b: Bundle, trusted: Verifier, r: Report) -> None:
    """Open the signed note under the trusted key; proofs are then checked against its size and root."""
    m, note = b.manifest, b.read("checkpoint.note")
    r.size, r.root = b.size, b.root
    parts = str(m["origin"]).split("/")
    if len(parts) != 3 or parts[0] != "runledger" or parts[2] != m["tenant"]:
        r.fail(f"checkpoint: origin {m['origin']!r} is not tenant {m['tenant']!r}'s (runledger/<deployment>/<tenant>)")
    if str(m["checkpoint"].get("note")).encode() != note:
        r.fail("manifest: the checkpoint note differs from checkpoint.note")
    named = f"{trusted.name}+{trusted.key_id:08x}"
    try:
        checkpoint, _ = Checkpoint.open(note, [trusted], m["origin"])
        r.size, r.root = checkpoint.size, checkpoint.root
    except UnknownKey as error:
        by = ", ".join(s.key for s in error.signatures) or "no key of its origin"
        r.fail(f"checkpoint: signature does not verify under {named} (signed by {by})")
    except BadSignature:
        r.fail(f"checkpoint: signature does not verify under {named}")
    except NoteError as error:
        r.fail(f"checkpoint: {error}")
    if (r.size, r.root) != (b.size, b.root):
        r.fail(f"manifest: checkpoint size/root ({b.size}, {m['checkpoint']['root']}) differ from the signed "
               f"note's ({r.size}, {base64.b64encode(r.root).decode()})")


def verify_bundle(path: str | Path, key: Verifier | None = None) -> Report:
    """Check a bundle offline; the report lists every problem found (none: it verifies)."""
    from schemas.bundle_checks import check_content, check_earlier
    b = Bundle(path)
    try:
        r = Report(b.manifest)
        _check_digests(b, r)
        if key is None:
            try:
                key = Verifier.from_vkey(b.manifest["checkpoint"]["key"])
            except (NoteError, KeyError, TypeError) as error:
                raise BundleUnreadable(f"{path}: manifest.json: the checkpoint key is unusable: {error}") from None
            r.warnings.append(f"warning: the key {key.name}+{key.key_id:08x} came from the bundle itself, so this "
                              f"only shows the bundle is self-consistent; pass --key with the log's published vkey")
        r.key = f"{key.name}+{key.key_id:08x}"
        _check_checkpoint(b, key, r)
        try:
            governance = json.loads(b.read("governance.json"))
        except ValueError:
            r.fail("governance.json: not JSON")
            governance = None
        check_content(b, governance, r)
        check_earlier(b, r)
        return r
    finally:
        b.close()


def verify_extends(old_path: str | Path, new_path: str | Path, key: Verifier | None = None) -> Report:
    """Both bundles verify, and the new one's tree extends the old one's (RFC 9162 consistency)."""
    new, old = verify_bundle(new_path, key), verify_bundle(old_path, key)
    r = Report(new.manifest, [f"new: {p}" for p in new.problems] + [f"old: {p}" for p in old.problems],
               list(dict.fromkeys(new.warnings + old.warnings)), new.dropped + old.dropped, new.events,
               new.size, new.root, new.key, new.earlier)
    om, nm = old.manifest, new.manifest
    if om["origin"] != nm["origin"]:
        r.fail(f"extends: the bundles are of different logs: old {om['origin']!r}, new {nm['origin']!r}")
    if key is None and om["checkpoint"].get("key") != nm["checkpoint"].get("key"):
        r.fail(f"extends: the checkpoints are signed by different keys (old {om['checkpoint'].get('key')}, new "
               f"{nm['checkpoint'].get('key')}); pass --key to check both against one trusted key")
    b64 = base64.b64encode
    if old.size > new.size:
        r.fail(f"extends: the old bundle's checkpoint (size {old.size}) is larger than the new one's ({new.size})")
    elif old.size == new.size and old.root != new.root:
        r.fail(f"fork: both checkpoints are of size {new.size} but their roots differ "
               f"(old {b64(old.root).decode()}, new {b64(new.root).decode()})")
    elif old.size < new.size:
        entry = next((e for e in new.earlier if e["size"] == old.size), None)
        if entry is None:
            r.fail(f"fork or gap: the new bundle carries no consistency proof from size {old.size} (the old "
                   f"bundle's checkpoint) to size {new.size}")
        elif entry["root"] != b64(old.root).decode():
            r.fail(f"fork: at size {old.size} the new bundle's tree has root {entry['root']}, the old bundle's "
                   f"checkpoint signs {b64(old.root).decode()}")
        else:
            try:
                check_consistency(old.size, new.size, old.root, new.root, [bytes.fromhex(h) for h in entry["proof"]])
            except ProofError as error:
                r.fail(f"fork: consistency from size {old.size} to {new.size} does not verify: {error}")
    return r
