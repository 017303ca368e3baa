"""README.md's "Checking a bundle without runledger": the script there, run as an auditor would (stdlib Python,
then openssl), accepts a real bundle and refuses a changed byte, naming the place."""
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support import REPO
from tests.unit.test_bundle import KEY_NAME, SIGNER, export, story

SECTION = "#### Checking a bundle without runledger"


def script() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(SECTION)
    end = readme.index("\n### ", start + len(SECTION))
    blocks = re.findall(r"^```python\n(.*?)^```$", readme[start:end], re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture
def unpacked(tmp_path) -> tuple[Path, Path]:
    h, ids = story()
    bundle = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]})
    d = tmp_path / "b"
    d.mkdir()
    with tarfile.open(bundle) as tar:
        tar.extractall(d, filter="data")
    check = tmp_path / "check.py"
    check.write_text(script())
    return d, check


def run_check(check: Path, d: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", str(check), str(d), SIGNER.vkey], capture_output=True, text=True,
                          timeout=60)


def test_the_readme_script_accepts_a_bundle_and_openssl_verifies_its_checkpoint_signature(unpacked):
    d, check = unpacked
    done = run_check(check, d)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    first, command = done.stdout.splitlines()
    assert first.startswith(f"events, proofs and digests OK against {KEY_NAME.split('+')[0]} size 22 root ")
    assert shutil.which("openssl"), "the README's procedure needs openssl 3"
    verified = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stdout.strip()) == (0, "Signature Verified Successfully"), verified.stderr
    # a signature over anything else does not verify
    (d / "note.txt").write_bytes((d / "note.txt").read_bytes().replace(b"\n22\n", b"\n21\n"))
    forged = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    assert (forged.returncode, forged.stdout.strip()) == (1, "Signature Verification Failure")


def test_the_readme_script_names_a_changed_member_and_a_changed_event(unpacked):
    d, check = unpacked
    events = d / "events.jsonl"
    data = events.read_bytes()
    events.write_bytes(data.replace(b'"agent_id":"a"', b'"agent_id":"b"', 1))
    assert run_check(check, d).stderr.rstrip().endswith("AssertionError: events.jsonl: digest")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["members"]["events.jsonl"]["sha256"] = hashlib.sha256(events.read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(manifest))
    first_seq = json.loads(data.splitlines()[0])["chain_seq"]
    assert run_check(check, d).stderr.rstrip().endswith(f"AssertionError: events.jsonl chain_seq {first_seq}: hash")
