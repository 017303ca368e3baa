"""schemas/merkle.py against public vectors, a literal RFC 9162 reference and exhaustive tampering.

Vectors: tests/vectors/merkle.json, written by tests/oracle (Go) from github.com/transparency-dev/merkle
v0.0.2 (rfc6962, proof, compact, testonly) cross-checked there with golang.org/x/mod v0.43.0 sumdb/tlog;
`test_vectors_are_what_the_go_oracle_writes` regenerates it (and notes.json) when Go is here. The literals
of tests/vectors/transparency-dev-merkle-verify_test.json are copied from transparency-dev/merkle v0.0.2
proof/verify_test.go (Apache-2.0, Google LLC).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from schemas import merkle as m
from schemas.merkle_trees import TreeStore

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ORACLE = Path(__file__).resolve().parents[1] / "oracle"
DATA = json.loads((VECTORS / "merkle.json").read_text())
H = bytes.fromhex


def hexes(hashes):
    return [h.hex() for h in hashes]


def vector_leaf(i: int) -> bytes:
    return hashlib.sha256(f"runledger/vector/{i}".encode()).digest()


@functools.lru_cache(maxsize=1)
def large() -> TreeStore:
    return TreeStore.from_leaves(vector_leaf(i) for i in range(DATA["large"]["size"]))


# Copied from transparency-dev/merkle v0.0.2 proof/verify_test.go: the RFC 6962 8-leaf tree's leaves, roots,
# inclusion {leaf (1-based), size, proof} and consistency {size1, size2, proof} vectors.
GO = json.loads((VECTORS / "transparency-dev-merkle-verify_test.json").read_text())
GO_LEAVES, GO_ROOTS = GO["leaves"], GO["roots"]
GO_INCLUSION = [(c["leaf"], c["size"], c["proof"]) for c in GO["inclusion"]]
GO_CONSISTENCY = [(c["size1"], c["size2"], c["proof"]) for c in GO["consistency"]]
SOME = H(GO["some_hash"])   # sha256SomeHash


def test_go_verify_test_literals():
    leaves = [H(x) for x in GO_LEAVES]
    assert m.root([]) == m.EMPTY_ROOT == H("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert [m.root(leaves[:n]).hex() for n in range(1, 9)] == GO_ROOTS
    for leaf, size, proof in GO_INCLUSION:
        assert hexes(m.inclusion_proof(leaves[:size], leaf - 1)) == proof
        m.check_inclusion(m.leaf_hash(leaves[leaf - 1]), leaf - 1, size, [H(p) for p in proof], H(GO_ROOTS[size - 1]))
    for old, new, proof in GO_CONSISTENCY:
        assert hexes(m.consistency_proof(leaves, old, new)) == proof
        m.check_consistency(old, new, H(GO_ROOTS[old - 1]), H(GO_ROOTS[new - 1]), [H(p) for p in proof])


def test_go_degenerate_probes():
    """TestVerifyInclusionSingleEntry / TestVerifyInclusion / TestVerifyConsistency of verify_test.go."""
    one = m.leaf_hash(b"data")
    assert m.verify_inclusion(one, 0, 1, [], one)
    assert not m.verify_inclusion(one, 0, 1, [], b"") and not m.verify_inclusion(b"", 0, 1, [], one)
    for index, size in [(0, 0), (0, 1), (1, 0), (2, 1)]:
        assert not m.verify_inclusion(SOME, index, size, [], m.EMPTY_ROOT)
    r1, r2 = m.leaf_hash(b"1"), m.leaf_hash(b"2")
    assert not m.verify_consistency(0, 0, r1, r2, []) and not m.verify_consistency(1, 1, r1, r2, [])
    assert m.verify_consistency(0, 0, m.EMPTY_ROOT, m.EMPTY_ROOT, []) and m.verify_consistency(1, 1, r2, r2, [])
    # Go takes any root for size 0 ("don't care"); we hold it to the empty tree's root.
    assert m.verify_consistency(0, 1, m.EMPTY_ROOT, r2, []) and not m.verify_consistency(0, 1, r1, r2, [])
    for old, new, proof in [(1, 0, []), (2, 1, []), (1, 2, []), (0, 0, [m.EMPTY_ROOT]), (0, 1, [m.EMPTY_ROOT]),
                            (1, 1, [m.EMPTY_ROOT])]:
        assert not m.verify_consistency(old, new, m.EMPTY_ROOT, m.EMPTY_ROOT, proof)


def test_testonly_constants_and_every_proof_of_that_tree():
    t = DATA["testonly"]
    leaves = [H(x) for x in t["leaf_inputs"]]
    assert t["leaf_inputs"] == GO_LEAVES and t["roots"][1:] == GO_ROOTS and t["empty_root"] == m.EMPTY_ROOT.hex()
    store = TreeStore.from_leaves(leaves)
    for level, row in enumerate(t["node_hashes"]):
        assert [store.node(level, i).hex() for i in range(len(row))] == row
    for size, hashes in enumerate(t["compact_trees"]):
        assert hexes(store.compact(size).hashes) == (hashes or [])
        assert store.root(size).hex() == t["roots"][size] == m.root(leaves[:size]).hex()
    for c in t["inclusion"]:
        assert hexes(store.inclusion_proof(c["index"], c["size"])) == c["proof"]
    for c in t["consistency"]:
        assert hexes(store.consistency_proof(c["old"], c["new"])) == c["proof"]


def test_exhaustive_vectors_up_to_32():
    ex = DATA["exhaustive"]
    leaves = [H(x) for x in ex["leaves"]]
    assert leaves == [vector_leaf(i) for i in range(ex["size"])]
    store = TreeStore.from_leaves(leaves)
    assert [m.root(leaves[:n]).hex() for n in range(ex["size"] + 1)] == ex["roots"]
    for c in ex["inclusion"]:
        proof = [H(p) for p in c["proof"]]
        assert store.inclusion_proof(c["index"], c["size"]) == proof
        assert m.inclusion_proof(leaves[:c["size"]], c["index"]) == proof
        m.check_inclusion(m.leaf_hash(leaves[c["index"]]), c["index"], c["size"], proof, H(ex["roots"][c["size"]]))
    for c in ex["consistency"]:
        proof = [H(p) for p in c["proof"]]
        assert store.consistency_proof(c["old"], c["new"]) == proof == m.consistency_proof(leaves, c["old"], c["new"])
        m.check_consistency(c["old"], c["new"], H(ex["roots"][c["old"]]), H(ex["roots"][c["new"]]), proof)


def test_large_tree_vectors():
    big, lg = large(), DATA["large"]
    for size, want in lg["roots"].items():
        assert big.root(int(size)).hex() == want
    for c in lg["inclusion"]:
        assert hexes(big.inclusion_proof(c["index"], c["size"])) == c["proof"]
        m.check_inclusion(big.node(0, c["index"]), c["index"], c["size"], [H(p) for p in c["proof"]],
                          big.root(c["size"]))
    for c in lg["consistency"]:
        assert hexes(big.consistency_proof(c["old"], c["new"])) == c["proof"]
        m.check_consistency(c["old"], c["new"], big.root(c["old"]), big.root(c["new"]), [H(p) for p in c["proof"]])


# RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 as written (recursion over lists), to hold the iterative code to.
def rfc_reference(leaves):
    @functools.lru_cache(maxsize=None)
    def mth(lo, hi):
        if hi - lo == 0:
            return m.EMPTY_ROOT
        if hi - lo == 1:
            return m.leaf_hash(leaves[lo])
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        return m.node_hash(mth(lo, lo + k), mth(lo + k, hi))

    def path(i, lo, hi):
        if hi - lo <= 1:
            return []
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if i < k:
            return path(i, lo, lo + k) + [mth(lo + k, hi)]
        return path(i - k, lo + k, hi) + [mth(lo, lo + k)]

    def subproof(mm, lo, hi, b):
        if mm == hi - lo:
            return [] if b else [mth(lo, hi)]
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if mm <= k:
            return subproof(mm, lo, lo + k, b) + [mth(lo + k, hi)]
        return subproof(mm - k, lo + k, hi, False) + [mth(lo, lo + k)]
    return mth, path, subproof


N = 300
FULL = 128


@functools.lru_cache(maxsize=1)
def exhaustive() -> tuple[TreeStore, list[bytes]]:
    store = TreeStore.from_leaves(vector_leaf(i) for i in range(N))
    return store, [store.root(n) for n in range(N + 1)]


def flipped(proof: list[bytes], which: int, byte: int) -> list[bytes]:
    out = list(proof)
    h = bytearray(out[which])
    h[byte % 32] ^= 1 << (byte % 8)
    out[which] = bytes(h)
    return out


def test_every_inclusion_proof_up_to_300_verifies_and_every_tamper_fails():
    """Every proof of every tree up to N verifies; each fails with a flipped bit (in every hash, up to
    FULL leaves; in one, above), a wrong leaf, root or index, twice or half the size, a hash more or less,
    and (up to FULL) the rest of transparency-dev's corruptions (verify_test.go). Not among them: the same
    proof and root with size n ± 1, which often verifies (the proof can have the same shape): a proof binds
    a leaf to an index and a root; the signed checkpoint binds that root to its size."""
    store, roots = exhaustive()
    mth, path, _ = rfc_reference([vector_leaf(i) for i in range(N)])
    for n in range(1, N + 1):
        assert roots[n] == mth(0, n)
        full, root = n <= FULL, roots[n]
        for i in range(n):
            leaf, proof = store.node(0, i), store.inclusion_proof(i, n)
            if n <= 64:
                assert proof == path(i, 0, n)
            m.check_inclusion(leaf, i, n, proof, root)
            for which in range(len(proof)) if full else [i % len(proof)] if proof else []:
                assert not m.verify_inclusion(leaf, i, n, flipped(proof, which, i + n), root)
            assert not m.verify_inclusion(flipped([leaf], 0, n)[0], i, n, proof, root)
            assert not m.verify_inclusion(leaf, i, n, proof, flipped([root], 0, i)[0])
            for wrong in ({i - 1, i + 1, i ^ 2} if full else {i + 1 if i + 1 < n else i - 1}) - {i, -1}:
                assert not m.verify_inclusion(leaf, wrong, n, proof, root)
            assert not m.verify_inclusion(leaf, i, n * 2, proof, root)
            assert not m.verify_inclusion(leaf, i, n // 2, proof, root)
            assert not m.verify_inclusion(leaf, i, n, proof + [SOME], root)
            assert not proof or not m.verify_inclusion(leaf, i, n, proof[:-1], root)
            for garbage in (leaf, root, SOME) if full else ():
                assert not m.verify_inclusion(leaf, i, n, proof + [garbage], root)
                assert not m.verify_inclusion(leaf, i, n, [garbage] + proof, root)
                assert len(proof) < 2 or not m.verify_inclusion(leaf, i, n, [proof[0], garbage, *proof[1:]], root)


def test_every_consistency_proof_up_to_300_verifies_and_every_tamper_fails():
    """As above, for every 1 <= old <= new <= N."""
    store, roots = exhaustive()
    _, _, subproof = rfc_reference([vector_leaf(i) for i in range(N)])
    for n in range(1, N + 1):
        full, r2 = n <= FULL, roots[n]
        for old in range(1, n + 1):
            proof, r1 = store.consistency_proof(old, n), roots[old]
            if n <= 64:
                assert proof == (subproof(old, 0, n, True) if old < n else [])
            m.check_consistency(old, n, r1, r2, proof)
            for which in range(len(proof)) if full else [old % len(proof)] if proof else []:
                assert not m.verify_consistency(old, n, r1, r2, flipped(proof, which, old + n))
            assert not m.verify_consistency(old, n, flipped([r1], 0, n)[0], r2, proof)
            assert not m.verify_consistency(old, n, r1, flipped([r2], 0, old)[0], proof)
            for wrong in ({old - 1, old + 1, old ^ 2} if full else {old + 1 if old < n else old - 1}) - {old}:
                assert not m.verify_consistency(wrong, n, r1, r2, proof)
            assert not m.verify_consistency(old, n * 2, r1, r2, proof)
            assert not m.verify_consistency(old, n // 2, r1, r2, proof)
            assert old == n or not m.verify_consistency(old, n, r2, r1, proof)
            assert not m.verify_consistency(old, n, r1, r2, proof + [SOME])
            assert not proof or not m.verify_consistency(old, n, r1, r2, proof[:-1])
            for garbage in (r1, r2, SOME, *proof[:1]) if full else ():
                assert not m.verify_consistency(old, n, r1, r2, proof + [garbage])
                assert not m.verify_consistency(old, n, r1, r2, [garbage] + proof)


def test_failures_say_what_failed():
    store, roots = exhaustive()
    proof = store.inclusion_proof(5, 20)
    with pytest.raises(m.RootMismatch) as bad:
        m.check_inclusion(store.node(0, 6), 5, 20, proof, roots[20])
    assert bad.value.expected == roots[20] and "inclusion of leaf 5 in the tree of 20" in str(bad.value)
    with pytest.raises(m.ProofError, match="the proof has 4 hashes; leaf 5 of a tree of 20 needs 5"):
        m.check_inclusion(store.node(0, 5), 5, 20, proof[:4], roots[20])
    with pytest.raises(m.ProofError, match="leaf index 20 is not below tree size 20"):
        m.check_inclusion(store.node(0, 5), 20, 20, proof, roots[20])
    with pytest.raises(m.ProofError, match="proof hash 1 is 31 bytes"):
        m.check_inclusion(store.node(0, 5), 5, 20, [proof[0], proof[1][:31], *proof[2:]], roots[20])
    cons = store.consistency_proof(7, 20)
    with pytest.raises(m.RootMismatch, match="old tree of 7"):
        m.check_consistency(7, 20, roots[6], roots[20], cons)
    with pytest.raises(m.RootMismatch, match="new tree of 20"):
        m.check_consistency(7, 20, roots[7], roots[21], cons)
    with pytest.raises(m.ProofError, match="old size 21 is larger than new size 20"):
        m.check_consistency(21, 20, roots[7], roots[20], cons)
    with pytest.raises(m.ProofError, match="tree size -1 is not a whole number"):
        m.check_inclusion(store.node(0, 5), 0, -1, [], roots[1])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 100_003), st.data())
def test_random_proofs_in_the_large_tree(size, data):
    big = large()
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    root = big.root(size)
    assert big.root(size) == big.compact(size).root()
    proof = big.inclusion_proof(index, size)
    assert m.verify_inclusion(big.node(0, index), index, size, proof, root)
    if proof:
        which, byte = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 31))
        assert not m.verify_inclusion(big.node(0, index), index, size, flipped(proof, which, byte), root)
    cons = big.consistency_proof(old, size)
    assert m.verify_consistency(old, size, big.root(old), root, cons)
    if cons:
        which, byte = data.draw(st.integers(0, len(cons) - 1)), data.draw(st.integers(0, 31))
        assert not m.verify_consistency(old, size, big.root(old), root, flipped(cons, which, byte))


def test_vectors_are_what_the_go_oracle_writes(tmp_path):
    """Regenerate tests/vectors/ with tests/oracle (Go) and compare, byte for byte."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` on PATH: the checked-in vectors stand (regenerate: cd tests/oracle && go run . -out ../vectors)")
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "GOTOOLCHAIN": "local"}
    fetched = subprocess.run([go, "mod", "download"], cwd=ORACLE, env=env, capture_output=True, text=True, timeout=300)
    if fetched.returncode != 0:
        pytest.skip(f"the oracle's Go modules cannot be had here: {fetched.stderr.strip()[-500:]}")
    done = subprocess.run([go, "run", ".", "-out", str(tmp_path)], cwd=ORACLE, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("merkle.json", "notes.json"):
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), f"{name} differs from the oracle's"


def test_a_proof_does_not_bind_the_size():
    """Why the tampering tests leave out size n ± 1: leaf 0's proof in the tree of 3, with that tree's root,
    also passes as leaf 0 of a tree of 4 (the shape is the same). The signed checkpoint binds size to root."""
    store, roots = exhaustive()
    proof = store.inclusion_proof(0, 3)
    assert m.verify_inclusion(store.node(0, 0), 0, 4, proof, roots[3])
    assert m.verify_consistency(1, 4, roots[1], roots[3], store.consistency_proof(1, 3))
