"""The console's own JavaScript, run by Node: its inclusion-proof check agrees with schemas/merkle.py and
schemas/notes.py (and refuses what they refuse), and its text/event-stream parser reads what streams send.

The browser test (tests/e2e/test_console.py) runs the same modules in Chromium against the real API;
this checks the many cases a browser test could not afford, without a browser.
"""
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.merkle import inclusion_proof, leaf_hash, root
from schemas.notes import Checkpoint, Signer

STATIC = Path(__file__).resolve().parents[2] / "queries" / "console" / "static"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser test runs these modules too)")

RUNNER = """
import {verifyInclusion} from "%(static)s/verify.js";
import {EventStreamParser} from "%(static)s/sse.js";
const input = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (c) => { text += c; }); process.stdin.on("end", () => resolve(text));
}));
const verdicts = [];
for (const c of input.cases) {
  try {
    const r = await verifyInclusion(c.answer, c.event_hash);
    verdicts.push({ok: true, size: r.treeSize, signature: r.signature});
  } catch (error) {
    verdicts.push({ok: false, error: error.message});
  }
}
const messages = [];
const parser = new EventStreamParser((m) => messages.push(m));
for (const chunk of input.chunks) parser.feed(chunk);
console.log(JSON.stringify({verdicts, messages, lastEventId: parser.lastEventId, retry: parser.retry}));
"""


def run_node(cases: list[dict], chunks: list[str]) -> dict:
    script = RUNNER % {"static": STATIC.as_posix()}
    done = subprocess.run([NODE, "--input-type=module", "-e", script], input=json.dumps({"cases": cases, "chunks": chunks}),
                          capture_output=True, text=True, timeout=60, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def answer(leaves: list[bytes], index: int, signer: Signer, origin: str) -> dict:
    """An inclusion answer shaped as GET /v1/evidence/inclusion serves it."""
    top = root(leaves)
    checkpoint = Checkpoint(origin, len(leaves), top)
    return {"chain_seq": index + 1, "leaf_index": index, "tree_size": len(leaves),
            "leaf_hash": leaf_hash(leaves[index]).hex(), "event_hash": leaves[index].hex(),
            "proof": [p.hex() for p in inclusion_proof(leaves, index)],
            "checkpoint": {"origin": origin, "size": len(leaves), "root": base64.b64encode(top).decode(),
                           "note": checkpoint.sign([signer]).decode(), "key": signer.vkey}}


def altered_signature(note: str) -> str:
    """The note with one bit of its Ed25519 signature flipped (the key ID kept)."""
    text, _, line = note.rstrip("\n").rpartition("\n")
    dash, name, blob = line.split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    return f"{text}\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"


def test_the_console_checks_every_inclusion_proof_the_server_makes_and_refuses_altered_ones():
    origin = "runledger/local/acme"
    signer, stranger = Signer(origin, os.urandom(32)), Signer(origin, os.urandom(32))
    good, bad = [], []
    for size in range(1, 18):
        leaves = [os.urandom(32) for _ in range(size)]
        for index in range(size):
            good.append({"answer": answer(leaves, index, signer, origin), "event_hash": leaves[index].hex()})
        one = answer(leaves, size // 2, signer, origin)
        event = leaves[size // 2].hex()
        if one["proof"]:
            flipped = json.loads(json.dumps(one))
            flipped["proof"][0] = ("0" if one["proof"][0][0] != "0" else "1") + one["proof"][0][1:]
            bad.append(("the proof does not lead", flipped, event))
            shorter = json.loads(json.dumps(one))
            shorter["proof"] = shorter["proof"][:-1]
            bad.append(("shorter than the tree", shorter, event))
        bad.append(("another event hash", one, os.urandom(32).hex()))
        strangers = json.loads(json.dumps(one))
        strangers["checkpoint"]["note"] = Checkpoint(origin, size, root(leaves)).sign([stranger]).decode()
        bad.append(("no signature by runledger/local/acme", strangers, event))
        forged = json.loads(json.dumps(one))
        forged["checkpoint"]["note"] = altered_signature(one["checkpoint"]["note"])
        bad.append(("signature does not verify", forged, event))
        other_root = json.loads(json.dumps(one))
        other_root["checkpoint"]["note"] = Checkpoint(origin, size, os.urandom(32)).sign([signer]).decode()
        bad.append(("does not state this tree", other_root, event))
    result = run_node(good + [{"answer": a, "event_hash": e} for _, a, e in bad], [])
    verdicts = result["verdicts"]
    assert verdicts[:len(good)] == [{"ok": True, "size": c["answer"]["tree_size"], "signature": "valid"} for c in good]
    for (why, _, _), verdict in zip(bad, verdicts[len(good):]):
        assert verdict["ok"] is False and why in verdict["error"], (why, verdict)


def test_the_console_parses_event_streams_split_anywhere():
    stream = (": runledger stream\r\nretry: 2000\r\n\r\nid: 0.7\r\nevent: subscribed\r\ndata: {\"chain_seq\": 17}\r\n\r\n"
              ": ping\r\n\r\nid: 1.7\r\nevent: approvals\r\ndata: {\"type\": \"approval.requested\", \"é\": 1}\r\n\r\n"
              "event: overflow\ndata: {\"resume_after\": \"1.7\"}\n\n")
    for cut in (1, 2, 3, 7, 13, len(stream)):
        chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]
        result = run_node([], chunks)
        assert result["messages"] == [
            {"event": "subscribed", "data": '{"chain_seq": 17}', "id": "0.7"},
            {"event": "approvals", "data": '{"type": "approval.requested", "é": 1}', "id": "1.7"},
            {"event": "overflow", "data": '{"resume_after": "1.7"}', "id": "1.7"}], cut
        assert (result["lastEventId"], result["retry"]) == ("1.7", 2000)
