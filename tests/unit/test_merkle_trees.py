"""schemas/merkle_trees.py: the compact tree and the store grow as the RFC 9162 tree does (tests/unit/test_merkle.py
holds schemas/merkle.py, which both build on, to the public vectors)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from schemas import merkle as m
from schemas.merkle_trees import CompactTree, TreeStore
from tests.unit.test_merkle import N, exhaustive, vector_leaf


def test_compact_tree_grows_like_the_store_and_round_trips():
    store, roots = exhaustive()
    tree = CompactTree()
    assert tree.root() == m.EMPTY_ROOT and tree.size == 0
    for n in range(N):
        tree.append(store.node(0, n))
        assert tree.size == n + 1 and tree.root() == roots[n + 1]
        assert tree == store.compact(n + 1) == CompactTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    resumed = store.compact(77)
    resumed.extend(store.node(0, i) for i in range(77, N))
    assert resumed == tree and CompactTree(tree.size, tree.hashes) == tree
    with pytest.raises(ValueError):
        CompactTree(3, [m.EMPTY_ROOT])
    with pytest.raises(ValueError):
        tree.append(b"short")


def test_store_appends_as_it_builds_in_bulk():
    bulk, _ = exhaustive()
    grown = TreeStore()
    for i in range(N):
        grown.append(m.leaf_hash(vector_leaf(i)))
        assert grown.root() == bulk.root(i + 1)
    assert grown._levels == bulk._levels
    with pytest.raises(ValueError, match="outside this tree"):
        grown.root(N + 1)
    with pytest.raises(IndexError):
        grown.node(9, 0)
    with pytest.raises(ValueError, match="not a subtree"):
        m.range_root(grown.node, 3, 7)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=300), st.data())
def test_any_leaves_resumed_anywhere_give_the_rfc_root(leaves, data):
    """A projector's life: append, save the state as JSON at some event, restart from it, go on."""
    cut = data.draw(st.integers(0, len(leaves)))
    first, store = CompactTree(), TreeStore()
    for leaf in leaves[:cut]:
        first.append(m.leaf_hash(leaf))
    resumed = CompactTree.from_dict(json.loads(json.dumps(first.to_dict())))
    resumed.extend(m.leaf_hash(leaf) for leaf in leaves[cut:])
    for leaf in leaves:
        store.append(m.leaf_hash(leaf))
    assert resumed.root() == store.root() == m.root(leaves) == TreeStore.from_leaves(leaves).root()
    assert store.compact(cut) == first and store.root(cut) == first.root() == m.root(leaves[:cut])
