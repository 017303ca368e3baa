"""Merkle trees that grow one event at a time (RFC 9162 hashing, schemas/merkle.py).

`CompactTree`, what a projector keeps per tenant: the compact range [0, n), one subtree root per set bit of
n, O(log n) memory and a JSON state; `append` costs amortised 2 hashes (at most log2 n), `root()` O(log n).
`TreeStore`: every perfect subtree's hash, one contiguous row per level, 64 bytes per leaf (64 MB for
1,000,000 leaves); `append` amortised 2 hashes; the root at any earlier size and any inclusion or consistency
proof cost O(log n) reads and hashes, never O(n).
"""
from __future__ import annotations

from typing import Iterable

from schemas.merkle import (EMPTY_ROOT, HASH_SIZE, subtrees, leaf_hash, levels, node_hash, prove_consistency,
                            prove_inclusion, range_root, row_reader)


class CompactTree:
    """The tree as its compact range [0, size): the roots of its perfect subtrees, largest first
    (one per set bit of size), enough to extend the root leaf by leaf without the leaves."""

    __slots__ = ("_size", "_hashes")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()):
        hashes = [bytes(h) for h in hashes]
        if size < 0 or len(hashes) != bin(size).count("1") or any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"a compact tree of size {size} has {bin(max(size, 0)).count('1')} hashes of "
                             f"{HASH_SIZE} bytes, not {[len(h) for h in hashes]}")
        self._size, self._hashes = size, hashes

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf, given as its leaf hash (`leaf_hash(event hash bytes)`)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf_hash)}")
        digest, n, hashes = bytes(leaf_hash), self._size, self._hashes
        while n & 1:
            digest = node_hash(hashes.pop(), digest)
            n >>= 1
        hashes.append(digest)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        digest = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            digest = node_hash(h, digest)
        return digest

    def to_dict(self) -> dict:
        return {"size": self._size, "hashes": [h.hex() for h in self._hashes]}

    @classmethod
    def from_dict(cls, state: dict) -> CompactTree:
        return cls(int(state["size"]), [bytes.fromhex(h) for h in state["hashes"]])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompactTree) and (self._size, self._hashes) == (other._size, other._hashes)

    def __repr__(self) -> str:
        return f"CompactTree(size={self._size}, root={self.root().hex()})"


class TreeStore:
    """Every perfect subtree's hash, one contiguous row of 32-byte hashes per level (level 0: the leaf
    hashes), so the root at any size up to `size` and any proof cost O(log n) reads, not O(n)."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self._node = row_reader(self._levels)

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> TreeStore:
        """Built level by level (faster than appending one at a time)."""
        store = cls()
        store._levels[:] = [bytearray(row) for row in levels(leaf_hashes)]
        store._size = len(store._levels[0]) // HASH_SIZE
        return store

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> TreeStore:
        return cls.from_leaf_hashes(leaf_hash(v) for v in leaves)

    @property
    def size(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """The bytes of hashes it holds: 32 per subtree, just under 64 per leaf."""
        return sum(len(row) for row in self._levels)

    def append(self, leaf_hash: bytes) -> None:
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf_hash)}")
        digest, level, n = bytes(leaf_hash), 0, self._size
        while True:
            row = self._levels[level]
            row += digest
            if not n & 1:
                break
            digest = node_hash(bytes(row[-64:-32]), digest)
            level, n = level + 1, n >> 1
            if level == len(self._levels):
                self._levels.append(bytearray())
        self._size += 1

    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree over leaves [index << level, (index + 1) << level)."""
        return self._node(level, index)

    def _size_at(self, size: int | None) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is outside this tree of {self._size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        return range_root(self.node, 0, self._size_at(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return prove_inclusion(self.node, index, self._size_at(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return prove_consistency(self.node, old_size, self._size_at(new_size))

    def compact(self, size: int | None = None) -> CompactTree:
        """The compact tree of the first `size` leaves, to go on appending from there."""
        return CompactTree(size := self._size_at(size), [self.node(lv, i) for lv, i in subtrees(0, size)])
