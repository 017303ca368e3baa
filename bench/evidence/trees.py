"""Phases 1–4: the compact tree a projector grows, the stored tree, inclusion and consistency proofs.

Beside the store's own proofs, phases 3 and 4 make each proof the way the evidence API does
(queries/evidence.py): pass 1 records which (level, index) hashes the proof reads, pass 3 proves from a
dict holding only those (what pass 2's one query returns); phase 2 times the evidence projector's nodes
(projectors/evidence.py: a poll's frontier plus its leaves give the subtrees it completes)."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Callable

from bench.evidence.args import TARGETS
from bench.evidence.timing import grow, once, rate_row, spread, timed
from bench.lib.report import Report
from projectors.evidence import completed, frontier
from queries.evidence import dict_reader, reads
from schemas import merkle as m
from schemas.merkle_trees import CompactTree, TreeStore

POLL = 1_000  # events per poll, for the projector's nodes


@dataclass
class Tree:
    """The tree under test: n event hashes, their stored tree and its root."""
    hashes: list[bytes]
    store: TreeStore | None = None
    root: bytes = b""
    samples: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.hashes)


def event_hashes(n: int) -> list[bytes]:
    """n stand-ins for event hashes: 32 bytes each, as tests/vectors/merkle.json's leaves."""
    return [hashlib.sha256(f"runledger/vector/{i}".encode()).digest() for i in range(n)]


def filler(hashes: list[bytes]) -> Callable[[CompactTree | TreeStore], int]:
    def fill(tree) -> int:
        append, leaf = tree.append, m.leaf_hash
        for h in hashes:
            append(leaf(h))
        return len(hashes)
    return fill


def compact(tree: Tree, args, report: Report) -> None:
    phase, n = "1 compact tree", tree.n
    first, t = grow(CompactTree, filler(tree.hashes), args.duration, "events")
    rate_row(report, phase, f"append per event (leaf hash + append), passes of {n:,}", t, "event", TARGETS["append"])
    if tree.root and first.root() != tree.root:
        report.errors.append(f"the compact tree's root {first.root().hex()} is not the store's {tree.root.hex()}")
    tree.root = tree.root or first.root()
    rate_row(report, phase, f"root() of the {n:,}-event tree", timed(lambda i: first.root(), args.duration, "roots"),
             "root", TARGETS["root"])
    state = json.dumps(first.to_dict())
    report.info(phase, f"state at {n:,} events (to_dict as JSON)",
                f"{len(first.hashes)} hashes, {len(state):,} bytes: O(log n), whatever n")


def store(tree: Tree, args, report: Report) -> None:
    phase, n = "2 tree store", tree.n
    first, t = grow(TreeStore, filler(tree.hashes), args.duration, "events")
    tree.store = first
    rate_row(report, phase, f"append per event (leaf hash + append), passes of {n:,}", t, "event", TARGETS["append"])
    bulk, seconds = once(lambda: TreeStore.from_leaf_hashes(m.leaf_hash(h) for h in tree.hashes))
    report.info(phase, f"bulk build from {n:,} leaves, level by level",
                f"{seconds:.2f} s ({seconds / n * 1e6:.2f} µs per leaf; one pass, no window)")
    report.info(phase, "memory", f"{first.nbytes / 2**20:,.1f} MiB of hashes ({first.nbytes / n:.1f} B per leaf)")
    scratch, seconds = once(lambda: m.root(tree.hashes))
    report.info(phase, f"root from the {n:,} leaves alone (O(n): hashes every leaf)", f"{seconds:.2f} s, once")
    roots = {first.root(), bulk.root(), scratch} | ({tree.root} if tree.root else set())
    if len(roots) != 1:
        report.errors.append(f"roots of the {n:,}-event tree disagree: {sorted(r.hex() for r in roots)}")
    tree.root = first.root()
    if (nodes := nodes_pass(first, tree.hashes, check=True)) != n - bin(n).count("1"):  # once, before timing
        report.errors.append(f"the projector's nodes of {n:,} leaves are {nodes:,}, not {n - bin(n).count('1'):,}")

    def one_pass(_) -> int:
        nodes_pass(first, tree.hashes)
        return n
    _, t = grow(lambda: None, one_pass, args.duration, "events")
    rate_row(report, phase, f"nodes a poll stores (frontier + append, polls of {POLL:,}), per event", t, "event",
             TARGETS["append"])
    sizes = tree.samples.setdefault("sizes", sample(n, args.samples, args.seed, low=1))
    rate_row(report, phase, f"root at an earlier size (O(log n)), {len(sizes):,} sizes ≤ {n:,}",
             timed(lambda i: first.root(sizes[i % len(sizes)]), args.duration, "roots"), "root", TARGETS["root"])


def nodes_pass(st: TreeStore, hashes: list[bytes], check: bool = False) -> int:
    """The evidence projector's work over the whole chain, poll by poll: read the frontier (here from the store,
    as the poll's one query would), append the poll's leaves (leaf hash of each event hash) and keep every node
    they complete (each must be the store's, if `check`); how many nodes."""
    count = 0
    for lo in range(0, len(hashes), POLL):
        done = completed(lo, [st.node(*c) for c in frontier(lo)], map(m.leaf_hash, hashes[lo:lo + POLL]))
        if check and any(st.node(level, idx) != h for level, idx, h in done):
            raise AssertionError(f"the projector's nodes of the poll from leaf {lo} are not the store's")
        count += len(done)
    return count


def needed(st: TreeStore, coordinates: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """What pass 2's one query returns: only the hashes a proof reads."""
    return {c: st.node(*c) for c in coordinates}


def from_nodes(prove, fetched: dict[tuple[int, int], bytes], *args: int) -> list[bytes]:
    """Passes 1 and 3 of a proof as the API makes it: record what it reads, then prove from what was fetched."""
    reads(prove, *args)
    return prove(dict_reader(fetched), *args)


def sample(n: int, k: int, seed: int, low: int = 0) -> list[int]:
    """k distinct values in [low, n): the edges and powers of two first, then random ones."""
    edges = sorted({low, n // 2, n - 1} | {1 << b for b in range(n.bit_length()) if low <= 1 << b < n})
    rest = [v for v in random.Random(seed).sample(range(low, n), min(k, n - low)) if v not in edges]
    return sorted(edges[:k] + rest[:max(0, k - len(edges))])


def need_store(tree: Tree, args, report: Report) -> TreeStore:
    if tree.store is None:
        tree.store, _ = once(lambda: TreeStore.from_leaf_hashes(m.leaf_hash(h) for h in tree.hashes))
        tree.root = tree.store.root()
        report.notes.append("phase 2 did not run: the proofs use a store built in bulk")
    return tree.store


def inclusion(tree: Tree, args, report: Report) -> None:
    phase, n, st = f"3 inclusion @ {tree.n:,}", tree.n, need_store(tree, args, report)
    indices = sample(n, args.samples, args.seed + 1)
    proofs = [st.inclusion_proof(i, n) for i in indices]
    leaves = [st.node(0, i) for i in indices]
    for i, leaf, proof in zip(indices, leaves, proofs):
        try:
            m.check_inclusion(leaf, i, n, proof, tree.root)
        except m.ProofError as error:
            report.errors.append(f"the inclusion proof of leaf {i} does not verify: {error}")
            return
    lengths = [len(p) for p in proofs]
    report.info(phase, "proof size, hashes", f"{spread(lengths)} leaf indices; {max(lengths) * 32:,} B at most "
                f"(⌈log2 n⌉ = {(n - 1).bit_length()})")
    k = len(indices)
    rate_row(report, phase, "make a proof from the store (O(log n))",
             timed(lambda j: st.inclusion_proof(indices[j % k], n), args.duration, "proofs"), "proof", TARGETS["prove"])
    # as the API does: its leaf and what the proof reads, in one query; the proof from only those
    fetched = [needed(st, [(0, i), *reads(m.prove_inclusion, i, n)]) for i in indices]
    if any(m.prove_inclusion(dict_reader(d), i, n) != p for d, i, p in zip(fetched, indices, proofs)):
        report.errors.append("an inclusion proof from only the nodes it reads is not the store's")
        return
    report.info(phase, "nodes read per proof (one query: its leaf and its path)",
                f"{spread(len(d) for d in fetched)} leaf indices, instead of {n:,} leaves")
    rate_row(report, phase, "make a proof from only the nodes it reads (record them, prove from a dict)",
             timed(lambda j: from_nodes(m.prove_inclusion, fetched[j % k], indices[j % k], n), args.duration,
                   "proofs"), "proof", TARGETS["prove"])
    failed = [0]

    def verify(j: int) -> None:
        failed[0] += not m.verify_inclusion(leaves[j % k], indices[j % k], n, proofs[j % k], tree.root)
    rate_row(report, phase, "verify a proof", timed(verify, args.duration, "proofs"), "proof", TARGETS["verify"])
    if failed[0]:
        report.errors.append(f"{failed[0]} inclusion verifications failed in the timed window")
    _, seconds = once(lambda: m.inclusion_proof(tree.hashes, n // 3))
    report.info(phase, "one proof from the leaves alone (O(n): hashes every leaf)", f"{seconds:.2f} s, once")


def consistency(tree: Tree, args, report: Report) -> None:
    phase, n, st = f"4 consistency → {tree.n:,}", tree.n, need_store(tree, args, report)
    olds = sample(n, args.samples, args.seed + 2, low=1)
    proofs = [st.consistency_proof(old, n) for old in olds]
    old_roots = [st.root(old) for old in olds]
    for old, old_root, proof in zip(olds, old_roots, proofs):
        try:
            m.check_consistency(old, n, old_root, tree.root, proof)
        except m.ProofError as error:
            report.errors.append(f"the consistency proof from {old} does not verify: {error}")
            return
    lengths = [len(p) for p in proofs]
    report.info(phase, "proof size, hashes", f"{spread(lengths)} old sizes; {max(lengths) * 32:,} B at most")
    k = len(olds)
    rate_row(report, phase, "make a proof from the store (O(log n))",
             timed(lambda j: st.consistency_proof(olds[j % k], n), args.duration, "proofs"), "proof", TARGETS["prove"])
    fetched = [needed(st, reads(m.prove_consistency, old, n)) for old in olds]
    if any(m.prove_consistency(dict_reader(d), old, n) != p for d, old, p in zip(fetched, olds, proofs)):
        report.errors.append("a consistency proof from only the nodes it reads is not the store's")
        return
    report.info(phase, "nodes read per proof (one query)",
                f"{spread(len(d) for d in fetched)} old sizes, instead of {n:,} leaves")
    rate_row(report, phase, "make a proof from only the nodes it reads (record them, prove from a dict)",
             timed(lambda j: from_nodes(m.prove_consistency, fetched[j % k], olds[j % k], n), args.duration, "proofs"),
             "proof", TARGETS["prove"])
    failed = [0]

    def verify(j: int) -> None:
        failed[0] += not m.verify_consistency(olds[j % k], n, old_roots[j % k], tree.root, proofs[j % k])
    rate_row(report, phase, "verify a proof", timed(verify, args.duration, "proofs"), "proof", TARGETS["verify"])
    if failed[0]:
        report.errors.append(f"{failed[0]} consistency verifications failed in the timed window")
