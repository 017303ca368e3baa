"""Evidence queries (queries/evidence.py) over an in-memory read model: every proof verifies against its signed
root and equals the list-based RFC 9162 proof, each bad input has its own refusal, and leaves that disagree
with a signed checkpoint answer evidence_mismatch instead of a proof. The SQL is tested on PostgreSQL in
tests/integration/test_evidence_proofs.py."""
import base64
import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from infra.adapters.http.errors import Refused
from queries.evidence import Evidence
from schemas import merkle
from schemas.notes import Checkpoint, Signer

TENANT = "acme"
ORIGIN = "runledger/test/acme"
KEY_1, KEY_2 = Signer(ORIGIN, bytes(range(32))), Signer(ORIGIN, bytes(range(1, 33)))
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
HASHES = [hashlib.sha256(f"event {i}".encode()).digest() for i in range(1, 21)]  # chain_seq 1..20
SIZES = (1, 6, 13, 19)  # checkpoints at chain_seq size + 1; the one of 19 is signed by the rotated key


def checkpoint(size: int, signer: Signer = KEY_1, root: bytes | None = None) -> dict:
    root = merkle.root(HASHES[:size]) if root is None else root
    note = Checkpoint(ORIGIN, size, root).sign([signer]).decode()
    return {"origin": ORIGIN, "size": size, "root": root, "note": note, "key": signer.vkey, "chain_seq": size + 1,
            "recorded_at": T0 + timedelta(seconds=size)}


class Memory(Evidence):
    """The read model as lists: one tenant's leaves (chain_seq, hash) and checkpoints."""

    def __init__(self, leaves: list[tuple[int, bytes]], checkpoints: list[dict]):
        super().__init__(models=None)
        self.rows, self.checkpoints = leaves, checkpoints

    async def find(self, tenant_id, size=None, exact=False):
        mine = sorted(self.checkpoints if tenant_id == TENANT else [], key=lambda c: c["size"])
        if size is None:
            return mine[-1] if mine else None
        return next((c for c in mine if (c["size"] == size if exact else c["size"] >= size)), None)

    async def leaf_rows(self, tenant_id, size):
        return sorted(r for r in self.rows if tenant_id == TENANT and 1 <= r[0] <= size)

    async def key_rows(self, tenant_id):
        keys = {}
        for c in sorted(self.checkpoints, key=lambda c: c["chain_seq"]):
            keys.setdefault(c["key"], []).append(c)
        return [{"key": k, "checkpoints": len(cs), "first_size": cs[0]["size"], "last_size": cs[-1]["size"],
                 "first_seen": cs[0]["recorded_at"], "last_seen": cs[-1]["recorded_at"]} for k, cs in keys.items()]


def full() -> Memory:
    return Memory(list(enumerate(HASHES, 1)), [checkpoint(s, KEY_2 if s == 19 else KEY_1) for s in SIZES])


def served(cp: dict) -> dict:
    return {**cp, "root": base64.b64encode(cp["root"]).decode(), "recorded_at": at(cp["size"])}


def at(second: int) -> str:
    return f"2026-11-22T12:00:{second:02d}.000000Z"


async def test_every_inclusion_proof_of_every_checkpoint_verifies_and_is_rfc_9162s():
    evidence = full()
    for size in SIZES:
        cp = checkpoint(size, KEY_2 if size == 19 else KEY_1)
        for seq in range(1, size + 1):
            got = await evidence.inclusion(TENANT, seq, size)
            proof = [bytes.fromhex(h) for h in got["proof"]]
            merkle.check_inclusion(bytes.fromhex(got["leaf_hash"]), seq - 1, size, proof, cp["root"])
            assert got == {"chain_seq": seq, "leaf_index": seq - 1, "tree_size": size,
                           "leaf_hash": merkle.leaf_hash(HASHES[seq - 1]).hex(), "event_hash": HASHES[seq - 1].hex(),
                           "proof": [h.hex() for h in merkle.inclusion_proof(HASHES[:size], seq - 1)],
                           "checkpoint": served(cp)}


async def test_without_a_size_the_proof_is_against_the_latest_checkpoint():
    got = await full().inclusion(TENANT, 7)
    assert (got["tree_size"], got["checkpoint"]["size"], got["checkpoint"]["chain_seq"], len(got["proof"])) == \
        (19, 19, 20, len(merkle.inclusion_proof(HASHES[:19], 6)))


async def test_every_consistency_proof_between_checkpoints_verifies_and_is_rfc_9162s():
    evidence = full()
    for new in SIZES:
        for old in (s for s in SIZES if s <= new):
            got = await evidence.consistency(TENANT, old, new)
            old_root, new_root = merkle.root(HASHES[:old]), merkle.root(HASHES[:new])
            merkle.check_consistency(old, new, old_root, new_root, [bytes.fromhex(h) for h in got["proof"]])
            assert {k: got[k] for k in ("old_size", "new_size", "old_root", "new_root", "proof")} == {
                "old_size": old, "new_size": new, "old_root": old_root.hex(), "new_root": new_root.hex(),
                "proof": [h.hex() for h in merkle.consistency_proof(HASHES, old, new)]}
            assert (got["old_checkpoint"]["size"], got["new_checkpoint"]["size"]) == (old, new)
    latest = await evidence.consistency(TENANT, 6)
    assert (latest["old_size"], latest["new_size"], latest["proof"]) == \
        (6, 19, [h.hex() for h in merkle.consistency_proof(HASHES, 6, 19)])
    assert (await evidence.consistency(TENANT, 19))["proof"] == []


async def test_a_checkpoint_is_the_latest_or_the_first_at_or_after_a_size():
    evidence = full()
    assert await evidence.checkpoint(TENANT) == served(checkpoint(19, KEY_2))
    at_least = [(await evidence.checkpoint(TENANT, s))["size"] for s in (1, 2, 6, 7, 13, 14, 19)]
    assert at_least == [1, 6, 6, 13, 13, 19, 19]


async def test_the_keys_are_each_vkey_seen_oldest_first_with_what_it_signed():
    assert await full().keys(TENANT) == {"items": [
        {"key": KEY_1.vkey, "name": ORIGIN, "key_id": f"{KEY_1.key_id:08x}", "algorithm": "Ed25519", "checkpoints": 3,
         "first_size": 1, "last_size": 13, "first_seen": at(1), "last_seen": at(13)},
        {"key": KEY_2.vkey, "name": ORIGIN, "key_id": f"{KEY_2.key_id:08x}", "algorithm": "Ed25519", "checkpoints": 1,
         "first_size": 19, "last_size": 19, "first_seen": at(19), "last_seen": at(19)}]}
    assert await Memory([], []).keys(TENANT) == {"items": []}


NOT_CHECKPOINTED = ("is beyond this tenant's latest signed checkpoint, of size 19 (chain_seq 1 to 19); a later "
                    "checkpoint will cover it")
WHOLE = "must be a whole number from 1 to 9223372036854775807, not"


def not_a_checkpoint(size: int, name: str) -> str:
    return (f"no signed checkpoint of this tenant has size {size} ({name}); proofs are against checkpoint sizes: "
            f"/v1/evidence/checkpoint?size={size} gives the first at or after it")


REFUSALS = [
    ("inclusion", (0,), 400, "invalid_chain_seq", f"chain_seq {WHOLE} 0"),
    ("inclusion", (-3,), 400, "invalid_chain_seq", f"chain_seq {WHOLE} -3"),
    ("inclusion", (2 ** 63,), 400, "invalid_chain_seq", f"chain_seq {WHOLE} {2 ** 63}"),
    ("inclusion", (1, 0), 400, "invalid_size", f"size {WHOLE} 0"),
    ("inclusion", (7, 6), 400, "invalid_range",
     "chain_seq 7 is not in the tree of size 6, which holds chain_seq 1 to 6"),
    ("inclusion", (20,), 404, "not_checkpointed", f"chain_seq 20 {NOT_CHECKPOINTED}"),
    ("inclusion", (10 ** 9,), 404, "not_checkpointed", f"chain_seq 1000000000 {NOT_CHECKPOINTED}"),
    ("inclusion", (3, 20), 404, "not_checkpointed", f"size 20 {NOT_CHECKPOINTED}"),
    ("inclusion", (3, 7), 404, "not_a_checkpoint", not_a_checkpoint(7, "size")),
    ("consistency", (0,), 400, "invalid_size", f"old_size {WHOLE} 0"),
    ("consistency", (6, 0), 400, "invalid_size", f"new_size {WHOLE} 0"),
    ("consistency", (13, 6), 400, "invalid_range", "old_size 13 is larger than new_size 6"),
    ("consistency", (6, 20), 404, "not_checkpointed", f"new_size 20 {NOT_CHECKPOINTED}"),
    ("consistency", (20,), 404, "not_checkpointed", f"old_size 20 {NOT_CHECKPOINTED}"),
    ("consistency", (5, 13), 404, "not_a_checkpoint", not_a_checkpoint(5, "old_size")),
    ("consistency", (6, 12), 404, "not_a_checkpoint", not_a_checkpoint(12, "new_size")),
    ("checkpoint", (0,), 400, "invalid_size", f"size {WHOLE} 0"),
    ("checkpoint", (20,), 404, "not_checkpointed", f"size 20 {NOT_CHECKPOINTED}"),
]


@pytest.mark.parametrize("method, args, status, code, reason", REFUSALS)
async def test_each_bad_input_has_its_own_refusal(method, args, status, code, reason):
    with pytest.raises(Refused) as refused:
        await getattr(full(), method)(TENANT, *args)
    assert (refused.value.status, refused.value.code, refused.value.reason) == (status, code, reason)


@pytest.mark.parametrize("method, args", [("checkpoint", ()), ("inclusion", (1,)), ("consistency", (1,))])
async def test_another_tenant_or_one_without_checkpoints_has_none(method, args):
    for evidence, tenant in ((full(), "other"), (Memory(list(enumerate(HASHES, 1)), []), TENANT)):
        with pytest.raises(Refused) as refused:
            await getattr(evidence, method)(tenant, *args)
        assert (refused.value.status, refused.value.code, refused.value.reason) == (
            404, "no_checkpoint", "this tenant has no signed checkpoint yet: the processor signs one every N events "
                                  "or T seconds; try again later")


def mismatch(sizes: str, problem: str) -> str:
    return (f"the evidence read model of tenant acme disagrees with its signed {sizes}: {problem}; no proof is "
            "served (operators have been told: rebuild the evidence read model and check the chain)")


async def test_an_altered_leaf_answers_evidence_mismatch_for_every_proof_over_it_not_a_wrong_proof():
    altered = [*HASHES[:8], hashlib.sha256(b"forged").digest(), *HASHES[9:]]  # chain_seq 9
    evidence = Memory(list(enumerate(altered, 1)), [checkpoint(s) for s in SIZES])
    leads_to, signed = merkle.root(altered[:13]).hex(), merkle.root(HASHES[:13]).hex()
    for seq in (1, 9, 13):
        with pytest.raises(Refused) as refused:
            await evidence.inclusion(TENANT, seq, 13)
        problem = (f"inclusion of leaf {seq - 1} in the tree of 13: the proof leads to root {leads_to}, "
                   f"expected {signed}")
        assert (refused.value.status, refused.value.code, refused.value.details, refused.value.reason) == (
            500, "evidence_mismatch", {"tenant_id": TENANT, "sizes": [13]}, mismatch("checkpoint of size 13", problem))
    with pytest.raises(Refused) as refused:
        await evidence.consistency(TENANT, 6, 13)
    problem = f"new tree of 13: the proof leads to root {leads_to}, expected {signed}"
    assert (refused.value.status, refused.value.code, refused.value.details, refused.value.reason) == (
        500, "evidence_mismatch", {"tenant_id": TENANT, "sizes": [6, 13]},
        mismatch("checkpoints of size 6 and 13", problem))
    # below the altered leaf, every proof still verifies
    assert (await evidence.inclusion(TENANT, 3, 6))["proof"] == \
        [h.hex() for h in merkle.inclusion_proof(HASHES[:6], 2)]


@pytest.mark.parametrize("rows, held", [
    ([r for r in enumerate(HASHES, 1) if r[0] != 4], "the read model holds 12 of the leaves 1 to 13"),
    (list(enumerate(HASHES[:10], 1)), "the read model holds 10 of the leaves 1 to 13"),
    ([(0, HASHES[0])] + [r for r in enumerate(HASHES, 1) if r[0] != 4],
     "the read model holds 12 of the leaves 1 to 13"),
])
async def test_missing_leaves_answer_evidence_mismatch(rows, held):
    evidence = Memory(rows, [checkpoint(13)])
    with pytest.raises(Refused) as refused:
        await evidence.inclusion(TENANT, 2)
    assert (refused.value.status, refused.value.code, refused.value.reason) == (
        500, "evidence_mismatch", mismatch("checkpoint of size 13", held))


async def test_two_signed_checkpoints_that_do_not_extend_each_other_answer_evidence_mismatch():
    forked = checkpoint(6, root=merkle.root([*HASHES[:5], b"\x00" * 32]))  # signed, but over another sixth event
    evidence = Memory(list(enumerate(HASHES, 1)), [forked, checkpoint(13)])
    with pytest.raises(Refused) as refused:
        await evidence.consistency(TENANT, 6, 13)
    assert (refused.value.status, refused.value.code, refused.value.details) == \
        (500, "evidence_mismatch", {"tenant_id": TENANT, "sizes": [6, 13]})
    assert refused.value.reason.startswith("the evidence read model of tenant acme disagrees with its signed "
                                           "checkpoints of size 6 and 13: old tree of 6: the proof leads to root ")
    assert (await evidence.inclusion(TENANT, 6, 13))["tree_size"] == 13
