"""Evidence queries (queries/evidence.py) over an in-memory read model: every proof verifies against its signed
root and equals the list-based RFC 9162 proof, each bad input has its own refusal, and leaves or nodes that
disagree with a signed checkpoint answer evidence_mismatch instead of a proof. Proofs are made from the
O(log n) stored hashes they need (nodes and leaves), and equal those made from every leaf (the fallback for
a tenant without stored nodes) for every index of trees of many sizes. The SQL is tested on PostgreSQL in
tests/integration/test_evidence_proofs.py."""
import base64
import bisect
import hashlib
import logging
from datetime import datetime, timedelta, timezone

import pytest

from infra.adapters.http.errors import Refused
from queries.evidence import Evidence
from schemas import merkle
from schemas.merkle_trees import TreeStore
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
            "recorded_at": T0 + timedelta(seconds=size % 60)}


def nodes_of(hashes: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree's hash at level >= 1 of the tree of these event hashes, as the projector stores them."""
    store = TreeStore.from_leaves(hashes)
    return {(level, i): store.node(level, i)
            for level in range(1, len(hashes).bit_length()) for i in range(len(hashes) >> level)}


class Memory(Evidence):
    """The read model in memory: one tenant's leaves (chain_seq, hash), checkpoints and nodes ((level, idx) → hash;
    by default those the projector stores for these leaves). Records every read of nodes and of all leaves."""

    def __init__(self, leaves: list[tuple[int, bytes]], checkpoints: list[dict],
                 nodes: dict[tuple[int, int], bytes] | None = None):
        super().__init__(models=None)
        self.rows, self.checkpoints = leaves, checkpoints
        self.nodes = nodes_of([h for _, h in sorted(leaves)]) if nodes is None else nodes
        self.by_seq = dict(leaves)
        self.by_size = {c["size"]: c for c in checkpoints}
        self.sizes = sorted(self.by_size)
        self.node_reads: list[list[tuple[int, int]]] = []  # the coordinates each node_rows call asked for
        self.leaf_reads: list[int] = []  # the size each leaf_rows call read up to (the O(n) path)

    async def find(self, tenant_id, size=None, exact=False):
        if tenant_id != TENANT or not self.sizes:
            return None
        if size is None:
            return self.by_size[self.sizes[-1]]
        if exact:
            return self.by_size.get(size)
        at = bisect.bisect_left(self.sizes, size)
        return self.by_size[self.sizes[at]] if at < len(self.sizes) else None

    async def node_rows(self, tenant_id, coordinates):
        self.node_reads.append(list(coordinates))
        if tenant_id != TENANT:
            return []
        stored = [(lv, i, self.nodes.get((lv, i)) if lv else self.by_seq.get(i + 1)) for lv, i in coordinates]
        return [row for row in stored if row[2] is not None]

    async def leaf_rows(self, tenant_id, size):
        self.leaf_reads.append(size)
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
    # projected so: its nodes are those of the altered leaves (a row altered after: tests/integration, tampered leaf)
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


@pytest.mark.parametrize("nodes", [nodes_of(HASHES), {}], ids=["nodes stored", "no nodes (from the leaves)"])
@pytest.mark.parametrize("rows, held", [
    ([r for r in enumerate(HASHES, 1) if r[0] != 4], "the read model holds 12 of the leaves 1 to 13"),
    (list(enumerate(HASHES[:10], 1)), "the read model holds 10 of the leaves 1 to 13"),
    ([(0, HASHES[0])] + [r for r in enumerate(HASHES, 1) if r[0] != 4],
     "the read model holds 12 of the leaves 1 to 13"),
])
async def test_missing_leaves_a_proof_reads_answer_evidence_mismatch(rows, held, nodes):
    # chain_seq 3's proof in the tree of 13 reads the leaves 3, 4 and 13: any of them missing, the proof is made
    # from every leaf, which finds what is missing
    evidence = Memory(rows, [checkpoint(13)], nodes)
    with pytest.raises(Refused) as refused:
        await evidence.inclusion(TENANT, 3)
    assert (refused.value.status, refused.value.code, refused.value.reason) == (
        500, "evidence_mismatch", mismatch("checkpoint of size 13", held))
    assert evidence.leaf_reads == [13]


async def test_a_proof_reads_only_the_rows_it_needs_so_a_lost_row_it_does_not_need_changes_nothing():
    evidence = Memory([r for r in enumerate(HASHES, 1) if r[0] != 4], [checkpoint(13)], nodes_of(HASHES))
    got = await evidence.inclusion(TENANT, 9)  # reads node (3, 0) over leaves 1..8, never leaf 4 itself
    assert got["proof"] == [h.hex() for h in merkle.inclusion_proof(HASHES[:13], 8)]
    assert evidence.node_reads == [[(0, 8), (3, 0), (0, 12), (1, 5), (0, 9)]] and evidence.leaf_reads == []


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


# -- proofs from stored nodes, against proofs from every leaf ---------------------------------------------------
BIG = [hashlib.sha256(f"big event {i}".encode()).digest() for i in range(1, 1025)]
BIG_STORE = TreeStore.from_leaves(BIG)
BIG_SIZES = (*range(1, 301), 511, 512, 513, 1000, 1024)
EVERY_LEAF_UP_TO = 40  # up to this size, every answer is also made from every leaf (O(n) each), and compared


@pytest.fixture(scope="module")
def big_checkpoints() -> list[dict]:
    return [checkpoint(size, root=BIG_STORE.root(size)) for size in BIG_SIZES]


def bounded(reads: list[list[tuple[int, int]]], size: int, extra: int) -> bool:
    return all(len(r) <= 2 * (size - 1).bit_length() + extra for r in reads)


async def test_inclusion_proofs_from_nodes_equal_those_from_every_leaf_for_every_index_of_many_sizes(big_checkpoints):
    from_nodes = Memory(list(enumerate(BIG, 1)), big_checkpoints)
    from_leaves = Memory(list(enumerate(BIG, 1)), big_checkpoints, nodes={})
    for size in BIG_SIZES:
        for seq in range(1, size + 1):
            got = await from_nodes.inclusion(TENANT, seq, size)
            assert (got["proof"], got["leaf_hash"], got["event_hash"]) == (
                [h.hex() for h in BIG_STORE.inclusion_proof(seq - 1, size)], BIG_STORE.node(0, seq - 1).hex(),
                BIG[seq - 1].hex()), (seq, size)
            if size <= EVERY_LEAF_UP_TO or seq in (1, 2, size // 2, size - 1, size):
                assert got == await from_leaves.inclusion(TENANT, seq, size), (seq, size)
        # one query of at most 2 log2(size) + 1 hashes per proof (its leaf too), never every leaf
        assert bounded(from_nodes.node_reads, size, 1) and from_nodes.leaf_reads == [], size
        from_nodes.node_reads.clear()
    # without nodes, trees of 1 and 2 are all leaves; every larger one has proofs that fall back to every leaf
    assert set(from_leaves.leaf_reads) == set(BIG_SIZES) - {1, 2}


async def test_consistency_proofs_from_nodes_equal_those_from_every_leaf_for_every_old_size(big_checkpoints):
    from_nodes = Memory(list(enumerate(BIG, 1)), big_checkpoints)
    from_leaves = Memory(list(enumerate(BIG, 1)), big_checkpoints, nodes={})
    for new in BIG_SIZES:
        for old in range(1, new + 1) if new <= 300 else (*range(1, 300, 7), 511, 512, 513, 1000, 1024):
            if old > new:
                continue
            got = await from_nodes.consistency(TENANT, old, new)
            assert (got["old_root"], got["new_root"], got["proof"]) == (
                BIG_STORE.root(old).hex(), BIG_STORE.root(new).hex(),
                [h.hex() for h in BIG_STORE.consistency_proof(old, new)]), (old, new)
            if new <= EVERY_LEAF_UP_TO or old in (1, new // 2, new - 1):
                assert got == await from_leaves.consistency(TENANT, old, new), (old, new)
        assert bounded(from_nodes.node_reads, new, 0) and from_nodes.leaf_reads == [], new
        from_nodes.node_reads.clear()


async def test_without_stored_nodes_the_answers_come_from_the_leaves_the_same_logged_once_per_tenant(caplog):
    caplog.set_level(logging.WARNING, logger="queries.evidence")
    stored, bare = full(), Memory(list(enumerate(HASHES, 1)), full().checkpoints, nodes={})
    for size in SIZES:
        for seq in (1, size // 2 + 1, size):
            assert await bare.inclusion(TENANT, seq, size) == await stored.inclusion(TENANT, seq, size)
        assert await bare.consistency(TENANT, 1, size) == await stored.consistency(TENANT, 1, size)
    # a tree of 1 is one leaf (read as such); each later proof needs a node, so all its leaves are read instead
    assert bare.leaf_reads == [6] * 4 + [13] * 4 + [19] * 4 and stored.leaf_reads == []
    lines = [r.getMessage() for r in caplog.records if r.name == "queries.evidence"]
    assert lines == ["evidence: tenant acme: 2 of the 4 hashes a proof reads are not stored ((level, index) (1, 2) "
                     "first; a generation projected before the nodes table?): its proofs are made from all its "
                     "leaves, O(n) reads each, until the evidence read model is rebuilt"]
    # some nodes but not all: the same, from the leaves
    partial = Memory(list(enumerate(HASHES, 1)), full().checkpoints,
                     {c: h for c, h in nodes_of(HASHES).items() if c != (2, 1)})
    assert await partial.inclusion(TENANT, 1, 13) == await stored.inclusion(TENANT, 1, 13)
    assert partial.leaf_reads == [13]


async def test_a_tampered_node_answers_evidence_mismatch_for_the_proofs_that_read_it():
    nodes = {**nodes_of(HASHES), (2, 1): hashlib.sha256(b"forged").digest()}  # leaves 5..8
    evidence = Memory(list(enumerate(HASHES, 1)), full().checkpoints, nodes)
    signed = merkle.root(HASHES[:13]).hex()
    with pytest.raises(Refused) as refused:
        await evidence.inclusion(TENANT, 2, 13)
    problem = refused.value.reason.split("13: ", 1)[1].split("; no proof")[0]
    assert (refused.value.status, refused.value.code, refused.value.details) == \
        (500, "evidence_mismatch", {"tenant_id": TENANT, "sizes": [13]})
    assert refused.value.reason == mismatch("checkpoint of size 13", problem)
    assert problem.startswith("inclusion of leaf 1 in the tree of 13: the proof leads to root ") and \
        problem.endswith(f", expected {signed}")
    with pytest.raises(Refused) as refused:
        await evidence.consistency(TENANT, 1, 13)
    assert (refused.value.status, refused.value.code, refused.value.details) == \
        (500, "evidence_mismatch", {"tenant_id": TENANT, "sizes": [1, 13]})
    assert evidence.leaf_reads == []  # a mismatch is never retried from the leaves
    # proofs that do not read it are served, and verify
    for seq in (5, 6, 9, 13):  # leaves 5..8 read their own subtree below (2, 1); 9..13 read (3, 0) above it
        got = await evidence.inclusion(TENANT, seq, 13)
        assert got["proof"] == [h.hex() for h in merkle.inclusion_proof(HASHES[:13], seq - 1)]
    assert (await evidence.consistency(TENANT, 6, 19))["proof"] == \
        [h.hex() for h in merkle.consistency_proof(HASHES, 6, 19)]
