"""schemas/notes.py against golang.org/x/mod/sumdb/note and the C2SP specs.

Vectors: tests/vectors/notes.json, written by tests/oracle (Go) with golang.org/x/mod v0.43.0 sumdb/note
(Sign, Open, NewVerifier, NewEd25519VerifierKey) and github.com/transparency-dev/formats v0.1.1 log
(Checkpoint.Marshal, ParseCheckpoint). Its fixed keys and notes (PeterNeumann, EnochRoot) and its bad
messages are note_test.go's (BSD-style licence, The Go Authors). test_merkle.py's
`test_vectors_are_what_the_go_oracle_writes` regenerates both vector files when Go is here.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from schemas import notes as n
from schemas.merkle import EMPTY_ROOT

DATA = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "notes.json").read_text())
VKEYS = {k["name"]: k["vkey"] for k in DATA["keys"]}


def signer(name: str) -> n.Signer:
    key = next(k for k in DATA["keys"] if k["name"] == name)
    return n.Signer.from_skey(key["skey"]) if "seed" not in key else n.Signer(name, bytes.fromhex(key["seed"]))


def test_keys_and_vkeys():
    for key in DATA["keys"]:
        v = n.Verifier.from_vkey(key["vkey"])
        assert (v.name, f"{v.key_id:08x}", v.vkey) == (key["name"], key["key_id"], key["vkey"])
        if "skey" in key:
            s = n.Signer.from_skey(key["skey"])
            assert s.vkey == key["vkey"] and s.key_id == v.key_id and s.verifier.public_key == v.public_key
        if "seed" in key:
            assert n.Signer(key["name"], bytes.fromhex(key["seed"])).vkey == key["vkey"]


def test_vkeys_go_takes_and_refuses():
    for case in DATA["vkeys"]:
        if case["ok"]:
            assert n.Verifier.from_vkey(case["vkey"]).name
        else:
            with pytest.raises(n.MalformedKey):
                n.Verifier.from_vkey(case["vkey"])


def test_every_mangling_of_a_vkey_is_refused():
    """note_test.go TestNewVerifier: every proper substring and every byte+1 of the vkey is refused."""
    vkey = VKEYS["PeterNeumann"]
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(n.MalformedKey):
                    n.Verifier.from_vkey(vkey[i:j])
    for i in range(len(vkey)):
        mangled = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1:]
        if mangled.lower() != vkey.lower():   # hex digits in either case are one key ID, as in Go
            with pytest.raises(n.MalformedKey):
                n.Verifier.from_vkey(mangled)


def test_signed_notes_are_byte_for_byte_go_s():
    for note in DATA["notes"]:
        signers = [signer(name) for name in note["signers"]]
        assert n.sign_note(note["text"], signers).decode() == note["note"]
        text, verified = n.open_note(note["note"].encode(), [s.verifier for s in signers])
        assert text == note["text"] and [v.name for v in verified] == note["signers"]


def test_checkpoints_are_byte_for_byte_go_s():
    acme = signer("runledger/test/acme")
    for cp in DATA["checkpoints"]:
        checkpoint = n.Checkpoint(cp["origin"], cp["size"], bytes.fromhex(cp["root"]), cp["extensions"])
        assert checkpoint.to_text() == cp["text"] and n.Checkpoint.parse(cp["text"]) == checkpoint
        signers = [acme] + ([signer("witness.example/w1")] if cp["note"].count("\n— ") > 1 else [])
        assert checkpoint.sign(signers).decode() == cp["note"]
        if cp["origin"] == acme.name:
            assert n.Checkpoint.open(cp["note"].encode(), [acme.verifier], cp["origin"]) == (checkpoint, [acme.verifier])
        else:   # signed by a key not named as the origin: not the log's signature
            with pytest.raises(n.UnknownKey, match="no verified signature by the log's key 'runledger/prod/tenant-42'"):
                n.Checkpoint.open(cp["note"].encode(), [acme.verifier])
    log = signer("runledger/test/acme")
    opened, verified = n.Checkpoint.open(DATA["checkpoints"][2]["note"].encode(),
                                         [log.verifier, signer("witness.example/w1").verifier], "runledger/test/acme")
    assert opened.size == 3 and opened.extensions == ("extension one", "x=1") and len(verified) == 2
    with pytest.raises(n.MalformedCheckpoint, match="expected 'runledger/test/other'"):
        n.Checkpoint.open(DATA["checkpoints"][2]["note"].encode(), [log.verifier], "runledger/test/other")
    with pytest.raises(n.UnknownKey, match="no verified signature by the log's key"):
        n.Checkpoint.open(DATA["checkpoints"][2]["note"].encode(), [signer("witness.example/w1").verifier])


GO_ERRORS = {"malformed note": n.MalformedNote, "note has no verifiable signatures": n.UnknownKey,
             "invalid signature for key": n.BadSignature, "ambiguous key": n.AmbiguousKey}


@pytest.mark.parametrize("case", DATA["open"], ids=[c["case"] for c in DATA["open"]])
def test_open_says_what_go_says(case):
    verifiers = [n.Verifier.from_vkey(k) for k in case["vkeys"]]
    note = base64.b64decode(case["note_base64"]) if "note_base64" in case else case["note"].encode()
    if "error" not in case:
        text, verified = n.open_note(note, verifiers)
        assert text == case["text"] and [f"{v.name}+{v.key_id:08x}" for v in verified] == case["verified"]
        return
    kind = next(cls for prefix, cls in GO_ERRORS.items() if case["error"].startswith(prefix))
    with pytest.raises(kind) as refused:
        n.open_note(note, verifiers)
    if kind is n.BadSignature:
        assert str(refused.value) == case["error"]
    if kind is n.UnknownKey:
        assert list(dict.fromkeys(s.key for s in refused.value.signatures)) == case["unverified"]


def test_every_signature_line_of_a_known_key_is_verified():
    """Where we are stricter than Go: a second, broken line of a key that verified fails the note."""
    peter = n.Verifier.from_vkey(VKEYS["PeterNeumann"])
    good = DATA["notes"][0]["note"]
    line = good[good.index("— "):]
    broken = line[:60] + "ABCD" + line[60:]
    assert n.open_note(good.encode(), [peter])[1] == [peter]
    assert n.open_note((good + line).encode(), [peter])[1] == [peter]
    with pytest.raises(n.BadSignature, match="PeterNeumann\\+c74f20a3"):
        n.open_note((good + broken).encode(), [peter])


def test_the_specs_own_examples_parse():
    """The examples of c2sp.org/signed-note and c2sp.org/tlog-checkpoint (their keys are not published)."""
    note = ("Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
            "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n")
    text, sigs = n.parse_note(note.encode())
    assert text.endswith("ed è subito sera.\n") and "\n\n" in text
    assert [(s.name, len(s.signature)) for s in sigs] == [("quasimodo.example/salvatore", 64)]
    assert sigs[0].line() == note[note.rindex("— "):]
    checkpoint = ("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
                  "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n")
    text, sigs = n.parse_note(checkpoint.encode())
    parsed = n.Checkpoint.parse(text)
    assert (parsed.origin, parsed.size, parsed.to_text()) == ("example.com/behind-the-sofa", 20852163, text)
    with pytest.raises(n.UnknownKey, match="signed by example.com/behind-the-sofa\\+"):
        n.open_note(checkpoint.encode(), [signer("runledger/test/acme").verifier])


# transparency-dev/formats v0.1.1 log/checkpoint_test.go TestUnmarshalLogState inputs. That parser is laxer:
# it takes a root of any length ("bananas") and empty extension lines; c2sp.org/tlog-checkpoint does not.
FORMATS_CASES = [
    ("Log\n123\nYmFuYW5hcw==\n", "not the base64 of 32 bytes"),
    ("Log\n9944\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\nHere's some associated data.\n", "32 bytes"),
    ("Head\n9944\n", "3 lines or more"),
    ("\n9944\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n", "32 bytes"),
    ("Log\n123\nYmFuYW5hcw==", "each ending in a newline"),
    ("Log\nbananas\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n", "tree size 'bananas'"),
    ("Log\n-34\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n", "tree size '-34'"),
    ("Log\n3438945738945739845734895735\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "64-bit"),
    ("Log\n123\nThisIsn'tBase64\n", "base64"),
]
ROOT64 = base64.b64encode(EMPTY_ROOT).decode()


@pytest.mark.parametrize("text,why", FORMATS_CASES + [
    (f"Log\n9944\n{ROOT64}\n\n\n\n", "empty"), (f"Log\n0123\n{ROOT64}\n", "leading zeros"),
    (f"Log\n+1\n{ROOT64}\n", "tree size"), (f"Log\n１\n{ROOT64}\n", "tree size"), (f"Log\n 1\n{ROOT64}\n", "tree size"),
    (f"Log\n18446744073709551616\n{ROOT64}\n", "64-bit"), (f"Log\n1\n{ROOT64[:-1]}\n", "base64"),
    (f"Log\n1\n{ROOT64[:-2]}9=\n", "not the base64 of 32 bytes"), (f"Log\n1\n{ROOT64}\next\n\n", "empty"),
    (f"Log\n1\n{ROOT64}\nex\tt\n", "control character"),
])
def test_checkpoint_text_the_spec_refuses(text, why):
    with pytest.raises(n.MalformedCheckpoint, match=why):
        n.Checkpoint.parse(text)


def test_checkpoint_values_refused():
    for args in [("", 1, EMPTY_ROOT), ("o\nx", 1, EMPTY_ROOT), ("o", -1, EMPTY_ROOT), ("o", 2 ** 64, EMPTY_ROOT),
                 ("o", True, EMPTY_ROOT), ("o", 1, EMPTY_ROOT[:31]), ("o", 1, EMPTY_ROOT, ["a", ""])]:
        with pytest.raises(n.MalformedCheckpoint):
            n.Checkpoint(*args)
    assert n.Checkpoint("o", 2 ** 64 - 1, EMPTY_ROOT).to_text() == f"o\n18446744073709551615\n{ROOT64}\n"


def test_tenant_origin():
    assert n.tenant_origin("prod", "acme") == "runledger/prod/acme"
    for deployment, tenant in [("", "acme"), ("prod", ""), ("pr od", "acme"), ("prod", "a+b"), ("a/b", "c")]:
        with pytest.raises(ValueError):
            n.tenant_origin(deployment, tenant)


def test_signing_refuses_what_would_not_open():
    s = signer("runledger/test/acme")
    for text in ["no newline", "tab\there\n", "cr\r\n"]:
        with pytest.raises(n.MalformedNote):
            n.sign_note(text, [s])
    with pytest.raises(n.MalformedNote):
        n.sign_note("x\n", [])
    with pytest.raises(n.MalformedKey):
        n.Signer("bad name", bytes(32))
    with pytest.raises(n.MalformedKey):
        n.Signer.from_skey("PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(map(chr, range(32)))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=5), st.data())
def test_any_text_round_trips_and_any_flipped_byte_is_refused(lines, data):
    log, witness = signer("runledger/test/acme"), signer("witness.example/w1")
    text = "".join(line + "\n" for line in lines)
    note = n.sign_note(text, [log, witness])
    assert n.open_note(note, [log.verifier, witness.verifier]) == (text, [log.verifier, witness.verifier])
    at, bit = data.draw(st.integers(0, len(note) - 1)), data.draw(st.integers(0, 7))
    mangled = bytearray(note)
    mangled[at] ^= 1 << bit
    try:
        got = n.open_note(bytes(mangled), [log.verifier, witness.verifier])
    except n.NoteError:
        return
    # Still opens: the text is the same, and each signature that verified is the original's (a flip in
    # base64's unused low bits, before the '=', decodes to the same bytes). A flip in one key name leaves
    # that signature unknown, so ignored, and the other one verifies.
    before = {(s.name, s.key_id): s.signature for s in n.parse_note(note)[1]}
    after = {(s.name, s.key_id): s.signature for s in n.parse_note(bytes(mangled))[1]}
    assert got[0] == text and got[1]
    assert all(after[(v.name, v.key_id)] == before[(v.name, v.key_id)] for v in got[1])


def test_generated_keys_sign_and_verify():
    s = n.Signer(n.tenant_origin("test", "acme"), Ed25519PrivateKey.generate())
    cp = n.Checkpoint(s.name, 0, EMPTY_ROOT)
    opened, verified = n.Checkpoint.open(cp.sign([s]), [n.Verifier.from_vkey(s.vkey)], s.name)
    assert opened == cp and verified[0].vkey == s.vkey
