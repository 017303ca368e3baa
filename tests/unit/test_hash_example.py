"""The worked example of the hash rule in README.md is right, by the code and by plain hashlib + rfc8785."""
import hashlib
import json
import re

import rfc8785

from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import Envelope, compute_hash
from tests.support import REPO

SECTION = "## The event envelope and the hash rule"


def hash_rule_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(SECTION)
    end = readme.index("\n## ", start + len(SECTION))
    return readme[start:end]


def fenced(section: str, language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one ```{language} block in the hash-rule section, found {len(blocks)}"
    return blocks[0]


def test_the_readme_example_envelope_has_exactly_the_envelope_fields():
    # Given the example as an outside verifier reads it
    example = json.loads(fenced(hash_rule_section(), "json"))

    # Then it is a complete envelope: every field of the table, nothing else, in the table's order; the one
    # optional field (idempotency_key, present only when the command carried one) is absent, not null
    assert list(example) == [name for name, f in Envelope.model_fields.items() if f.is_required()]
    assert [name for name, f in Envelope.model_fields.items() if not f.is_required()] == ["idempotency_key"]
    assert Envelope.model_validate(example).model_dump(exclude_unset=True) == example


def test_the_readme_example_hash_is_the_sha256_of_its_canonical_json():
    # Given the example and the canonical text the README shows for it
    section = hash_rule_section()
    example = json.loads(fenced(section, "json"))
    shown_canonical = fenced(section, "text").rstrip("\n")
    without_hash = {k: v for k, v in example.items() if k != "hash"}

    # When the digest is computed by the project and by plain hashlib over rfc8785
    by_project = compute_hash(example)
    canonical = rfc8785.dumps(without_hash)
    by_hand = hashlib.sha256(canonical).hexdigest()

    # Then both give the README's hash, over exactly the bytes the README shows and counts
    assert (by_project, by_hand) == (example["hash"], example["hash"])
    assert example["hash"] == "dd64d6ed1466d3091b64c6f9f860f0960af1b14488a4866dabab05606884b2d1"
    assert shown_canonical.encode() == canonical
    stated_bytes = int(re.search(r"to these (\d+) bytes of UTF-8", section).group(1))
    assert stated_bytes == len(canonical) == 724
    quoted = re.search(r"whose SHA-256 is the `hash` above,\s*`([0-9a-f]{64})`", section).group(1)
    assert quoted == example["hash"]


def test_the_readme_example_is_a_valid_first_event_of_its_chain():
    # Given the example, which says it is the first event of tenant acme
    example = json.loads(fenced(hash_rule_section(), "json"))

    # When it is verified as a whole chain, Then it is one, from genesis, with its own hash as head
    assert verify_chain("acme", [example]) == ChainVerdict(True, 1, example["hash"])
