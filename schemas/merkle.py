"""RFC 9162 §2.1 Merkle trees over a tenant's event hashes: roots, proofs and their verifiers.

Leaves are the 32-byte event hashes (the bytes of each envelope's hex `hash`) in chain order: leaf hash =
SHA-256(0x00 ‖ leaf), node = SHA-256(0x01 ‖ left ‖ right), empty tree = SHA-256(""). Like the RFC, these
functions take leaves of any length (the public vectors have such leaves). `check_inclusion` and
`check_consistency` raise ProofError (RootMismatch for a well-formed proof that leads to another root) naming
what failed; `verify_*` answer True or False. A proof binds a leaf to an index and a root, not the root to a
size (the same proof can pass for size n ± 1): the signed checkpoint binds the size to the root.

Cost for n leaves: `root`/`inclusion_proof`/`consistency_proof` over a list hash every leaf, O(n);
`prove_*`/`range_root` over a `node(level, index)` reader of stored perfect-subtree hashes (a TreeStore,
rows from `levels`, a database, tiles) make any root or proof from O(log n) reads and hashes; verifying is
O(log n) hashes and O(1) memory. The trees that grow leaf by leaf (CompactTree, TreeStore) are in
schemas/merkle_trees.py.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
# (level, index) -> the hash of the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level)
NodeReader = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class ProofError(ValueError):
    """A proof that does not verify; the message says what failed."""


class RootMismatch(ProofError):
    """A well-formed proof that leads to another root than the one it was checked against."""

    def __init__(self, what: str, expected: bytes, calculated: bytes):
        self.expected, self.calculated = expected, calculated
        super().__init__(f"{what}: the proof leads to root {calculated.hex()}, expected {expected.hex()}")


def _split(n: int) -> int:
    """The largest power of two below n (n >= 2): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """The perfect subtrees covering leaves [lo, hi), left to right, as (level, index)."""
    out = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def range_root(node: NodeReader, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) from perfect-subtree hashes, for a range that starts an aligned block (as RFC 9162's
    recursion makes: lo a multiple of the smallest power of two >= hi - lo)."""
    if hi == lo:
        return EMPTY_ROOT
    if not 0 <= lo < hi or lo % (1 << (hi - lo - 1).bit_length()):
        raise ValueError(f"leaves [{lo}, {hi}) are not a subtree of RFC 9162's recursion")
    parts = [node(level, index) for level, index in subtrees(lo, hi)]
    digest = parts[-1]
    for part in reversed(parts[:-1]):
        digest = node_hash(part, digest)
    return digest


def prove_inclusion(node: NodeReader, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), from perfect-subtree hashes."""
    if not 0 <= index < size:
        raise ValueError(f"no leaf {index} in a tree of {size}")
    path, lo, hi = [], 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        left = index < lo + k
        path.append(range_root(node, lo + k, hi) if left else range_root(node, lo, lo + k))
        lo, hi = (lo, lo + k) if left else (lo + k, hi)
    return path[::-1]


def prove_consistency(node: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]); empty when old_size is 0 or new_size."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof, lo, hi, m, complete = [], 0, new_size, old_size, True   # SUBPROOF(m, D[lo:hi], complete)
    while m != hi - lo:
        k = _split(hi - lo)
        left = m <= k
        proof.append(range_root(node, lo + k, hi) if left else range_root(node, lo, lo + k))
        lo, hi, m, complete = (lo, lo + k, m, complete) if left else (lo + k, hi, m - k, False)
    if not complete:
        proof.append(range_root(node, lo, hi))
    return proof[::-1]


def _hash_arg(what: str, value: object) -> bytes:
    if type(value) is bytes and len(value) == HASH_SIZE:
        return value
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        size = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise ProofError(f"{what} is {size}, not a {HASH_SIZE}-byte hash")
    return bytes(value)


def _proof_arg(proof: Sequence[bytes]) -> list[bytes]:
    if all(type(h) is bytes and len(h) == HASH_SIZE for h in proof):
        return list(proof)
    return [_hash_arg(f"proof hash {i}", h) for i, h in enumerate(proof)]


def _size_arg(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"{what} {value!r} is not a whole number >= 0")
    return value


def _inclusion_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def check_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: raise ProofError unless `proof` shows `leaf_hash` is leaf `index` of the tree
    of `size` leaves whose root is `root`."""
    leaf, root, proof = _hash_arg("leaf hash", leaf_hash), _hash_arg("root", root), _proof_arg(proof)
    index, size = _size_arg("leaf index", index), _size_arg("tree size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    if len(proof) != (want := _inclusion_length(index, size)):
        raise ProofError(f"the proof has {len(proof)} hashes; leaf {index} of a tree of {size} needs {want}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"the proof is longer than leaf {index} of a tree of {size} needs")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"the proof is shorter than leaf {index} of a tree of {size} needs")
    if r != root:
        raise RootMismatch(f"inclusion of leaf {index} in the tree of {size}", root, r)


def _consistency_length(old_size: int, new_size: int) -> int:
    shift = (old_size & -old_size).bit_length() - 1
    seeded = old_size != 1 << shift    # old tree not a perfect subtree: its subtree root comes first
    return int(seeded) + _inclusion_length(old_size - 1, new_size) - shift


def check_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                      proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless `proof` shows the tree of `old_size` leaves with root
    `old_root` is a prefix of the tree of `new_size` leaves with root `new_root`.

    Sizes equal: the proof must be empty and the roots equal. Old size 0: the proof must be empty and
    `old_root` must be the empty tree's root (transparency-dev/merkle does not look at that root)."""
    old_root, new_root = _hash_arg("old root", old_root), _hash_arg("new root", new_root)
    proof = _proof_arg(proof)
    old_size, new_size = _size_arg("old size", old_size), _size_arg("new size", new_size)
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size in (0, new_size):
        if proof:
            raise ProofError(f"from size {old_size} to {new_size} the proof must be empty; it has {len(proof)} hashes")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise RootMismatch("the empty tree", EMPTY_ROOT, old_root)
        if old_size == new_size and old_root != new_root:
            raise RootMismatch(f"two trees of the same size {new_size}", old_root, new_root)
        return
    if len(proof) != (want := _consistency_length(old_size, new_size)):
        raise ProofError(f"the proof has {len(proof)} hashes; from size {old_size} to {new_size} it needs {want}")
    if old_size & (old_size - 1) == 0:
        proof = [old_root, *proof]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError(f"the proof is longer than from size {old_size} to {new_size} needs")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"the proof is shorter than from size {old_size} to {new_size} needs")
    if fr != old_root:
        raise RootMismatch(f"old tree of {old_size}", old_root, fr)
    if sr != new_root:
        raise RootMismatch(f"new tree of {new_size}", new_root, sr)


def _passes(check: Callable[..., None], *args: object) -> bool:
    try:
        check(*args)
    except ProofError:
        return False
    return True


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True if check_inclusion passes (it says why not)."""
    return _passes(check_inclusion, leaf_hash, index, size, proof, root)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True if check_consistency passes (it says why not)."""
    return _passes(check_consistency, old_size, new_size, old_root, new_root, proof)


def levels(leaf_hashes: Iterable[bytes]) -> list[bytes]:
    """Every perfect subtree's hash of the tree of these leaf hashes, one row of 32-byte hashes per level
    (level 0: the leaf hashes), built level by level."""
    rows = [b"".join(leaf_hashes)]
    if len(rows[0]) % HASH_SIZE:
        raise ValueError(f"leaf hashes are {HASH_SIZE} bytes each")
    while len(rows[-1]) >= 2 * HASH_SIZE:
        row = rows[-1]
        rows.append(b"".join(hashlib.sha256(b"\x01" + row[i:i + 64]).digest() for i in range(0, len(row) - 63, 64)))
    return rows


def row_reader(rows: Sequence[bytes]) -> NodeReader:
    """A node reader over rows as `levels` makes them."""
    def node(level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        if level >= len(rows) or index < 0 or start + HASH_SIZE > len(rows[level]):
            raise IndexError(f"no complete subtree ({level}, {index}) in a tree of {len(rows[0]) // HASH_SIZE}")
        return bytes(rows[level][start:start + HASH_SIZE])
    return node


def _reader(leaves: Sequence[bytes]) -> NodeReader:
    return row_reader(levels(leaf_hash(v) for v in leaves))


def root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf values (event hashes)."""
    return range_root(_reader(leaves), 0, len(leaves))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:len(leaves)]) over leaf values."""
    return prove_inclusion(_reader(leaves), index, len(leaves))


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int | None = None) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]) over leaf values (new_size defaults to all)."""
    new_size = len(leaves) if new_size is None else new_size
    if not 0 <= new_size <= len(leaves):
        raise ValueError(f"new size {new_size} is outside the {len(leaves)} leaves given")
    return prove_consistency(_reader(leaves[:new_size]), old_size, new_size)
