"""The evidence projector's nodes (projectors/evidence.py), without a database: per poll and tenant, the frontier
of the tree before the poll plus the poll's leaves give exactly the perfect subtrees the poll completes, so
whatever way a chain is cut into polls (and redelivered, whole or from part-way), the stored nodes are exactly
TreeStore's at level >= 1. Then the same through EvidenceProjection.write over an in-memory connection that
answers its frontier query and keeps its inserts: one frontier read and one executemany per table per poll.
The SQL itself runs on PostgreSQL in tests/integration/test_evidence_proofs.py."""
import hashlib
import logging
import random

import pytest

from projectors.evidence import EvidenceProjection, completed, frontier, tenant_runs
from schemas.merkle import leaf_hash, subtrees
from schemas.merkle_trees import CompactTree, TreeStore

EVENTS = [hashlib.sha256(f"event {i}".encode()).digest() for i in range(1, 401)]
LEAVES = [leaf_hash(h) for h in EVENTS]
STORE = TreeStore.from_leaf_hashes(LEAVES)


def reference(size: int) -> dict[tuple[int, int], bytes]:
    """TreeStore's nodes at level >= 1 of the tree of the first `size` leaves: every complete perfect subtree."""
    return {(level, i): STORE.node(level, i) for level in range(1, size.bit_length()) for i in range(size >> level)}


def project(cuts: list[int], stored: dict | None = None, start: int = 0) -> dict[tuple[int, int], bytes]:
    """Fold leaves [start, cuts[-1]) in polls ending at each cut, as the projector does: each poll reads the
    frontier of the size before it (level 0 from the leaves) from what is stored, and stores what it completes."""
    stored = {} if stored is None else stored
    for lo, hi in zip([start, *cuts], cuts):
        hashes = [stored[c] if c[0] else LEAVES[c[1]] for c in frontier(lo)]
        for level, idx, digest in completed(lo, hashes, LEAVES[lo:hi]):
            assert stored.setdefault((level, idx), digest) == digest, (level, idx, lo, hi)
    return stored


def splits(size: int, rng: random.Random) -> dict[str, list[int]]:
    random_cuts = sorted({*rng.sample(range(1, size), min(size - 1, rng.randint(0, 6))), size})
    return {"one poll": [size], "a leaf a poll": list(range(1, size + 1)),
            "polls of 3": [*range(3, size, 3), size], "polls of 7": [*range(7, size, 7), size],
            "random": random_cuts}


def test_the_frontier_is_the_compact_trees_and_appending_to_it_completes_what_tree_store_holds():
    rng = random.Random(7)
    for size in range(0, 301):
        assert frontier(size) == subtrees(0, size)
        assert [STORE.node(*c) for c in frontier(size)] == list(STORE.compact(size).hashes)
        for how, cuts in (splits(size, rng) if size else {}).items():
            assert project(cuts) == reference(size), (size, how, cuts)


@pytest.mark.parametrize("size", [400, 256, 257, 383])
def test_larger_trees_in_random_polls(size):
    rng = random.Random(size)
    for _ in range(5):
        cuts = sorted({*rng.sample(range(1, size), rng.randint(1, 40)), size})
        assert project(cuts) == reference(size)


def test_a_poll_appends_in_the_order_its_leaves_complete_nodes_and_nothing_below_level_1():
    assert completed(0, [], LEAVES[:4]) == [(1, 0, STORE.node(1, 0)), (1, 1, STORE.node(1, 1)),
                                           (2, 0, STORE.node(2, 0))]
    assert completed(3, [STORE.node(1, 0), STORE.node(0, 2)], LEAVES[3:4]) == \
        [(1, 1, STORE.node(1, 1)), (2, 0, STORE.node(2, 0))]
    assert completed(4, [STORE.node(2, 0)], LEAVES[4:5]) == []
    tree = CompactTree()
    tree.extend(LEAVES[:37])
    assert completed(37, list(tree.hashes), []) == []
    with pytest.raises(ValueError, match="the frontier of a tree of 5 has 2 hashes, not 1"):
        completed(5, [STORE.node(2, 0)], LEAVES[5:6])


def test_a_redelivered_poll_or_one_from_part_way_recomputes_the_same_nodes_and_nothing_else():
    rng = random.Random(3)
    for size in (1, 2, 5, 64, 100, 255, 300):
        stored = project(splits(size, rng)["random"])
        before = dict(stored)
        for start in {0, 1, size // 3, size // 2, size - 1}:  # redelivered from `start` to the end, in 1 or 3 polls
            assert project([size], stored, start) == before
            assert project([*range(start + 3, size, 3), size], stored, start) == before
        # and then on: the next polls extend it as if never redelivered
        assert project([size + 50], stored, size) == reference(size + 50)


def test_a_polls_leaves_are_grouped_by_tenant_and_must_follow_each_other():
    leaves = [("a", 4, b"1"), ("b", 1, b"x"), ("a", 5, b"2"), ("b", 2, b"y"), ("a", 6, b"3")]
    assert tenant_runs(leaves) == {"a": (3, [b"1", b"2", b"3"]), "b": (0, [b"x", b"y"])}
    for bad, problem in (([("a", 4, b"1"), ("a", 6, b"2")], "tenant a: chain_seq 6 follows 4 in this poll"),
                         ([("a", 4, b"1"), ("a", 4, b"1")], "tenant a: chain_seq 4 follows 4 in this poll")):
        with pytest.raises(ValueError, match=problem):
            tenant_runs(bad)


# -- EvidenceProjection.write over an in-memory connection -------------------------------------------------------
class Cursor:
    def __init__(self, conn: "Connection"):
        self.conn = conn

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        table = sql.split(".", 1)[1].split(" ", 1)[0]
        self.conn.statements.append(("executemany", table, len(rows)))
        assert "ON CONFLICT" in sql and table in ("leaves", "nodes", "checkpoints")
        for row in rows:  # ON CONFLICT DO NOTHING on the primary key
            key, value = (row[:2], row[2]) if table == "leaves" else (row[:3], row[3])
            self.conn.tables[table].setdefault(key, value)


class Connection:
    """What the projector's write sees of PostgreSQL: the frontier query and the inserts (no checkpoints here)."""

    def __init__(self):
        self.tables: dict[str, dict] = {"leaves": {}, "nodes": {}, "checkpoints": {}}
        self.statements: list[tuple] = []

    def cursor(self) -> Cursor:
        return Cursor(self)

    async def execute(self, sql: str, params: tuple):
        tenants, levels, indices = params
        self.statements.append(("frontier", len(tenants)))
        assert "unnest" in sql and len(tenants) == len(levels) == len(indices)
        found = []
        for t, level, idx in zip(tenants, levels, indices):
            h = self.tables["nodes"].get((t, level, idx)) if level else self.tables["leaves"].get((t, idx + 1))
            if h is not None:
                found.append((t, level, idx, h))
        return Result(found)


class Result:
    def __init__(self, rows):
        self.rows = rows

    async def fetchall(self):
        return self.rows


def envelope(tenant: str, seq: int) -> dict:
    return {"tenant_id": tenant, "chain_seq": seq, "hash": EVENTS[seq - 1].hex(), "type": "step.started"}


def projection() -> EvidenceProjection:
    p = EvidenceProjection(None, "unit")
    p.schema = "unit_evidence_g1"
    return p


def stored_nodes(conn: Connection, tenant: str) -> dict[tuple[int, int], bytes]:
    return {(level, idx): h for (t, level, idx), h in conn.tables["nodes"].items() if t == tenant}


ONE_OF_EACH = (["frontier", "leaves", "nodes"], ["leaves", "nodes"], ["frontier", "leaves"], ["leaves"], [])


async def test_polls_that_mix_tenants_store_tree_stores_nodes_with_one_read_and_one_insert_per_table():
    conn, p, rng = Connection(), projection(), random.Random(11)
    sizes = {"a": 300, "b": 129, "c": 1, "d": 64}
    done = dict.fromkeys(sizes, 0)
    while any(done[t] < sizes[t] for t in sizes):
        poll = []
        for t in sizes:  # each tenant's next run of events, interleaved with the others'
            n = min(sizes[t] - done[t], rng.randint(0, 23))
            poll += [(rng.random(), envelope(t, s)) for s in range(done[t] + 1, done[t] + n + 1)]
            done[t] += n
        conn.statements.clear()
        await p.write(conn, [env for _, env in sorted(poll, key=lambda x: (x[1]["tenant_id"], x[1]["chain_seq"]))])
        kinds = [s[0] if s[0] == "frontier" else s[1] for s in conn.statements]
        assert kinds in ONE_OF_EACH, kinds  # one frontier read (none if every tenant is new), one insert per table
    for t, size in sizes.items():
        assert stored_nodes(conn, t) == reference(size), t
    # a poll delivered again from part-way, for two tenants at once, stores nothing new
    before = {k: dict(v) for k, v in conn.tables.items()}
    await p.write(conn, [envelope("a", s) for s in range(100, 201)] + [envelope("b", s) for s in range(2, 130)])
    assert conn.tables == before


async def test_a_tenant_whose_frontier_is_not_stored_gets_no_nodes_logged_once_and_the_others_do(caplog):
    caplog.set_level(logging.WARNING, logger="projectors.evidence")
    conn, p = Connection(), projection()
    conn.tables["leaves"] = {("old", s): EVENTS[s - 1] for s in range(1, 11)}  # projected before the nodes table
    await p.write(conn, [envelope("old", s) for s in range(11, 21)] + [envelope("new", s) for s in range(1, 21)])
    await p.write(conn, [envelope("old", s) for s in range(21, 31)] + [envelope("new", s) for s in range(21, 31)])
    assert stored_nodes(conn, "old") == {} and stored_nodes(conn, "new") == reference(30)
    assert [("old", s) in conn.tables["leaves"] for s in (20, 30)] == [True, True]
    assert [r.getMessage() for r in caplog.records] == [
        "evidence projection unit_evidence_g1: tenant old has no stored frontier at size 10 (its leaves were "
        "projected before the nodes table): it gets no nodes, and its proofs are made from its leaves until the "
        "evidence read model is rebuilt"]
    # one leaf is a frontier of its own: a tenant with a single leaf from before goes on with every node
    conn.tables["leaves"][("one", 1)] = EVENTS[0]
    await p.write(conn, [envelope("one", s) for s in range(2, 41)])
    assert stored_nodes(conn, "one") == reference(40)


async def test_leaves_that_do_not_follow_each_other_are_refused_before_anything_is_written():
    conn, p = Connection(), projection()
    with pytest.raises(ValueError, match="tenant a: chain_seq 3 follows 1 in this poll"):
        await p.write(conn, [envelope("a", 1), envelope("a", 3)])
    assert conn.statements == [] and p.deterministic(ValueError())
