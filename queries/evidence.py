"""Evidence over one tenant's chain: its signed checkpoints, inclusion and consistency proofs, its public keys.

Reads the `evidence` read model (projectors/evidence.py). Every proof is made from the stored subtree hashes
and leaves it needs, and checked against the signed root of its checkpoint(s) before it is served: one that
does not verify means the read model disagrees with what was signed (a leaf or node altered, missing or out
of place, or two signed checkpoints that do not extend each other), and the answer is 500
`evidence_mismatch` naming the tenant and the size(s), never a proof that would fail for the auditor.

Sizes: an inclusion proof is against the size of a recorded checkpoint (by default the latest, which
covers every chain_seq any checkpoint covers); a consistency proof is between the sizes of two recorded
checkpoints (`new_size` by default the latest), so both roots it names are signed ones. Any other size
at or below the latest checkpoint is 404 `not_a_checkpoint` (`/v1/evidence/checkpoint?size=` names the
first checkpoint at or after it); a size or chain_seq beyond the latest is 404 `not_checkpointed`, and a
tenant with no checkpoint at all is 404 `no_checkpoint`. Hashes in proofs are lowercase hex; a
checkpoint's `root` is base64, as in its note.

Cost: a proof reads O(log n) rows, in three passes. Pass 1 (`reads`) runs prove_inclusion /
prove_consistency over a reader that only records which (level, index) hashes it asks for; pass 2
(`stored`) fetches exactly those in one query (level >= 1 from `nodes`, which the projector fills with every
perfect subtree's hash; level 0 from `leaves`, hashed as RFC 9162 leaves here); pass 3 runs the same proof
over what was fetched. An inclusion proof reads at most 2⌈log2 n⌉ + 1 rows (its leaf too), a consistency
proof at most 2⌈log2 n⌉: in a tree of 1,000,000 events at most 26 rows over the benchmark's samples (mean
25) instead of 1,000,000 (bench/evidence, phases 3 and 4: "from only the nodes it reads"). Only those rows
are looked at, so a defect elsewhere in the read model is not seen by this proof, but by every proof that
reads it: whatever is served has been checked against the signed root(s).

A tenant whose nodes are not all stored (a generation projected before the `nodes` table, or a row gone)
gets its proofs the old way, logged once per tenant: its leaves 1..size (a row each) into a TreeStore,
O(n) reads and about 2n hashes per request (off the event loop), the same answer. Rebuilding the evidence
read model stores its nodes.
"""
import asyncio
import base64
import logging
from typing import Any, Callable

from psycopg.errors import UndefinedTable

from infra.adapters.http.errors import Refused
from queries.readmodels import ReadModels
from schemas.merkle import (HASH_SIZE, NodeReader, ProofError, check_consistency, check_inclusion, leaf_hash,
                            prove_consistency, prove_inclusion)
from schemas.merkle_trees import TreeStore
from schemas.envelope import iso
from schemas.notes import Verifier

READ_MODEL = "evidence"
MAX_SEQ = 2 ** 63 - 1  # what a PostgreSQL bigint holds
COLUMNS = "origin, size, root, note, key, chain_seq, recorded_at"
# The stored hashes at (level, idx): nodes for level >= 1, the event hash of leaf idx (chain_seq idx + 1) for level 0
NODES_SQL = ("SELECT level, idx, hash FROM {s}.nodes WHERE tenant_id = %s AND (level, idx) IN "
             "(SELECT * FROM unnest(%s::smallint[], %s::bigint[])) UNION ALL "
             "SELECT 0, chain_seq - 1, hash FROM {s}.leaves WHERE tenant_id = %s AND chain_seq = ANY(%s::bigint[])")
PLACEHOLDER = bytes(HASH_SIZE)
Coordinate = tuple[int, int]  # (level, index), as a NodeReader takes them
log = logging.getLogger(__name__)


class EvidenceMismatch(Refused):
    """The stored leaves and nodes do not lead to a signed root: serve no proof, say whose and which."""

    def __init__(self, tenant_id: str, sizes: tuple[int, ...], problem: str):
        sizes = tuple(dict.fromkeys(sizes))
        named = " and ".join(str(s) for s in sizes)
        super().__init__(500, "evidence_mismatch",
                         f"the evidence read model of tenant {tenant_id} disagrees with its signed checkpoint"
                         f"{'s' if len(sizes) > 1 else ''} of size {named}: {problem}; no proof is served "
                         "(operators have been told: rebuild the evidence read model and check the chain)",
                         {"tenant_id": tenant_id, "sizes": list(sizes)})
        log.error("evidence mismatch: tenant %s, checkpoint size %s: %s", tenant_id, named, problem)


def whole(name: str, value: int, code: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEQ:
        problem = f"must be a whole number from 1 to {MAX_SEQ}, not {value!r}"
        raise Refused(400, code, f"{name} {problem}", [{"field": name, "problem": problem}])
    return value


def no_checkpoint() -> Refused:
    return Refused(404, "no_checkpoint", "this tenant has no signed checkpoint yet: the processor signs one "
                                         "every N events or T seconds; try again later")


def not_checkpointed(name: str, value: int, latest: dict) -> Refused:
    return Refused(404, "not_checkpointed",
                   f"{name} {value} is beyond this tenant's latest signed checkpoint, of size {latest['size']} "
                   f"(chain_seq 1 to {latest['size']}); a later checkpoint will cover it",
                   {"latest_size": latest["size"]})


def view(row: dict) -> dict:
    """A checkpoint as served: its signed note, the key that signs it, what the note says, where the chain has it
    (`recorded_at` in the envelopes' own form, UTC with microseconds)."""
    return {"origin": row["origin"], "size": row["size"], "root": base64.b64encode(bytes(row["root"])).decode(),
            "note": row["note"], "key": row["key"], "chain_seq": row["chain_seq"],
            "recorded_at": iso(row["recorded_at"])}


def reads(prove: Callable[..., list[bytes]], *args: int) -> list[Coordinate]:
    """Pass 1: the (level, index) of every stored hash `prove(node, *args)` reads, in the order first read.

    What prove_inclusion and prove_consistency read depends on the index and the sizes alone, never on a hash
    value (schemas/merkle.py: their splits, lo/hi/m/complete and range_root's `subtrees` are integer
    arithmetic on those; node_hash only combines what was read), so a reader that answers a placeholder asks
    for exactly what the real proof will."""
    asked: dict[Coordinate, None] = {}

    def node(level: int, index: int) -> bytes:
        asked[level, index] = None
        return PLACEHOLDER
    prove(node, *args)
    return list(asked)


def dict_reader(nodes: dict[Coordinate, bytes]) -> NodeReader:
    return lambda level, index: nodes[level, index]


def inclusion_answer(tenant_id: str, node: NodeReader, event_hash: bytes, checkpoint: dict, chain_seq: int) -> dict:
    """Leaf chain_seq's inclusion proof in the tree of the checkpoint's size, checked against its root."""
    size, index = checkpoint["size"], chain_seq - 1
    proof, leaf = prove_inclusion(node, index, size), node(0, index)
    try:
        check_inclusion(leaf, index, size, proof, bytes(checkpoint["root"]))
    except ProofError as error:
        raise EvidenceMismatch(tenant_id, (size,), str(error)) from None
    return {"chain_seq": chain_seq, "leaf_index": index, "tree_size": size, "leaf_hash": leaf.hex(),
            "event_hash": event_hash.hex(), "proof": [h.hex() for h in proof], "checkpoint": view(checkpoint)}


def consistency_answer(tenant_id: str, node: NodeReader, old: dict, new: dict) -> dict:
    """The proof that the old checkpoint's tree is a prefix of the new one's, checked against both roots."""
    old_root, new_root = bytes(old["root"]), bytes(new["root"])
    proof = prove_consistency(node, old["size"], new["size"])
    try:
        check_consistency(old["size"], new["size"], old_root, new_root, proof)
    except ProofError as error:
        raise EvidenceMismatch(tenant_id, (old["size"], new["size"]), str(error)) from None
    return {"old_size": old["size"], "new_size": new["size"], "old_root": old_root.hex(), "new_root": new_root.hex(),
            "proof": [h.hex() for h in proof], "old_checkpoint": view(old), "new_checkpoint": view(new)}


def inclusion_from_leaves(tenant_id: str, leaves: list[bytes], checkpoint: dict, chain_seq: int) -> dict:
    """The O(n) way: a TreeStore over every leaf up to the checkpoint's size."""
    return inclusion_answer(tenant_id, TreeStore.from_leaves(leaves).node, leaves[chain_seq - 1], checkpoint,
                            chain_seq)


def consistency_from_leaves(tenant_id: str, leaves: list[bytes], old: dict, new: dict) -> dict:
    return consistency_answer(tenant_id, TreeStore.from_leaves(leaves).node, old, new)


class Evidence:
    """`find`, `node_rows`, `leaf_rows` and `key_rows` are its only reads (tests/unit/test_evidence_queries.py
    replaces them)."""

    def __init__(self, models: ReadModels):
        self.models = models
        self.unnoded: set[str] = set()  # tenants logged as lacking stored nodes (their proofs come from leaves)

    async def wait_for(self, tenant_id: str, min_seq: int | None, wait_ms: int) -> None:
        await self.models.wait_for(READ_MODEL, tenant_id, min_seq, wait_ms)

    # -- reads -------------------------------------------------------------------------------
    async def find(self, tenant_id: str, size: int | None = None, exact: bool = False) -> dict | None:
        """The latest checkpoint (no size), the first of at least `size`, or the one of exactly `size`."""
        if size is None:
            where, order, params = "", "size DESC", (tenant_id,)
        else:
            where, order, params = f" AND size {'=' if exact else '>='} %s", "size", (tenant_id, size)
        rows = await self.models.fetch(READ_MODEL, f"SELECT {COLUMNS} FROM {{s}}.checkpoints WHERE tenant_id = %s"
                                                   f"{where} ORDER BY {order} LIMIT 1", params)
        return rows[0] if rows else None

    async def leaf_rows(self, tenant_id: str, size: int) -> list[tuple[int, bytes]]:
        rows = await self.models.fetch(READ_MODEL, "SELECT chain_seq, hash FROM {s}.leaves WHERE tenant_id = %s "
                                                   "AND chain_seq BETWEEN 1 AND %s ORDER BY chain_seq",
                                       (tenant_id, size))
        return [(r["chain_seq"], bytes(r["hash"])) for r in rows]

    async def node_rows(self, tenant_id: str, coordinates: list[Coordinate]) -> list[tuple[int, int, bytes]]:
        """The stored (level, index, hash) of those coordinates that are stored, in one query; level 0 as the
        event hash. Nothing at all from a generation made before the nodes table."""
        levels, indices = [lv for lv, _ in coordinates if lv], [i for lv, i in coordinates if lv]
        seqs = [i + 1 for lv, i in coordinates if not lv]
        try:
            rows = await self.models.fetch(READ_MODEL, NODES_SQL, (tenant_id, levels, indices, tenant_id, seqs))
        except UndefinedTable:
            return []
        return [(r["level"], r["idx"], bytes(r["hash"])) for r in rows]

    async def key_rows(self, tenant_id: str) -> list[dict]:
        return await self.models.fetch(
            READ_MODEL, "SELECT key, count(*) AS checkpoints, min(size) AS first_size, max(size) AS last_size, "
                        "min(recorded_at) AS first_seen, max(recorded_at) AS last_seen FROM {s}.checkpoints "
                        "WHERE tenant_id = %s GROUP BY key ORDER BY min(chain_seq)", (tenant_id,))

    # -- checkpoints -------------------------------------------------------------------------
    async def latest(self, tenant_id: str) -> dict:
        if (row := await self.find(tenant_id)) is None:
            raise no_checkpoint()
        return row

    async def of_size(self, tenant_id: str, name: str, size: int) -> dict:
        """The recorded checkpoint of exactly this size."""
        latest = await self.latest(tenant_id)
        if size > latest["size"]:
            raise not_checkpointed(name, size, latest)
        if size == latest["size"]:
            return latest
        if (row := await self.find(tenant_id, size, exact=True)) is None:
            raise Refused(404, "not_a_checkpoint",
                          f"no signed checkpoint of this tenant has size {size} ({name}); proofs are against "
                          f"checkpoint sizes: /v1/evidence/checkpoint?size={size} gives the first at or after it")
        return row

    async def checkpoint(self, tenant_id: str, size: int | None = None) -> dict:
        """The latest signed checkpoint, or the first whose size is at least `size`."""
        if size is not None:
            whole("size", size, "invalid_size")
        latest = await self.latest(tenant_id)
        if size is None:
            return view(latest)
        if size > latest["size"]:
            raise not_checkpointed("size", size, latest)
        return view(await self.find(tenant_id, size) or latest)

    # -- proofs ------------------------------------------------------------------------------
    async def stored(self, tenant_id: str, coordinates: list[Coordinate]) -> dict[Coordinate, bytes] | None:
        """Pass 2: the hashes at those coordinates (level 0: the event hash, which the caller leaf-hashes), or
        None when any is not stored (logged once per tenant): the caller makes the proof from the leaves."""
        found = {(lv, i): h for lv, i, h in await self.node_rows(tenant_id, coordinates)} if coordinates else {}
        if missing := [c for c in coordinates if c not in found]:
            if tenant_id not in self.unnoded:
                self.unnoded.add(tenant_id)
                log.warning("evidence: tenant %s: %d of the %d hashes a proof reads are not stored ((level, index) "
                            "%s first; a generation projected before the nodes table?): its proofs are made from all "
                            "its leaves, O(n) reads each, until the evidence read model is rebuilt",
                            tenant_id, len(missing), len(coordinates), missing[0])
            return None
        return found

    @staticmethod
    def hashed(found: dict[Coordinate, bytes]) -> dict[Coordinate, bytes]:
        return {(lv, i): leaf_hash(h) if lv == 0 else h for (lv, i), h in found.items()}

    async def leaves(self, tenant_id: str, sizes: tuple[int, ...]) -> list[bytes]:
        """The event hashes of chain_seq 1..max(sizes), all of them, or EvidenceMismatch."""
        size = max(sizes)
        rows = await self.leaf_rows(tenant_id, size)
        if len(rows) != size or [seq for seq, _ in rows[-1:]] != [size]:
            raise EvidenceMismatch(tenant_id, sizes, f"the read model holds {len(rows)} of the leaves 1 to {size}")
        return [h for _, h in rows]

    async def inclusion(self, tenant_id: str, chain_seq: int, size: int | None = None) -> dict[str, Any]:
        """Proof that the event chain_seq is in the tree of a checkpoint (by default the latest)."""
        whole("chain_seq", chain_seq, "invalid_chain_seq")
        if size is None:
            checkpoint = await self.latest(tenant_id)
            if chain_seq > checkpoint["size"]:
                raise not_checkpointed("chain_seq", chain_seq, checkpoint)
        else:
            if chain_seq > whole("size", size, "invalid_size"):
                raise Refused(400, "invalid_range", f"chain_seq {chain_seq} is not in the tree of size {size}, "
                                                    f"which holds chain_seq 1 to {size}")
            checkpoint = await self.of_size(tenant_id, "size", size)
        index, size = chain_seq - 1, checkpoint["size"]
        found = await self.stored(tenant_id, [(0, index), *reads(prove_inclusion, index, size)])
        if found is not None:  # pass 3
            return inclusion_answer(tenant_id, dict_reader(self.hashed(found)), found[0, index], checkpoint, chain_seq)
        leaves = await self.leaves(tenant_id, (size,))
        return await asyncio.to_thread(inclusion_from_leaves, tenant_id, leaves, checkpoint, chain_seq)

    async def consistency(self, tenant_id: str, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        """Proof that the checkpoint of old_size is a prefix of that of new_size (by default the latest)."""
        whole("old_size", old_size, "invalid_size")
        if new_size is not None and old_size > whole("new_size", new_size, "invalid_size"):
            raise Refused(400, "invalid_range", f"old_size {old_size} is larger than new_size {new_size}")
        new = await (self.latest(tenant_id) if new_size is None else self.of_size(tenant_id, "new_size", new_size))
        if old_size > new["size"]:
            raise not_checkpointed("old_size", old_size, new)
        old = new if old_size == new["size"] else await self.of_size(tenant_id, "old_size", old_size)
        found = await self.stored(tenant_id, reads(prove_consistency, old["size"], new["size"]))
        if found is not None:  # pass 3
            return consistency_answer(tenant_id, dict_reader(self.hashed(found)), old, new)
        leaves = await self.leaves(tenant_id, (old["size"], new["size"]))
        return await asyncio.to_thread(consistency_from_leaves, tenant_id, leaves, old, new)

    # -- keys --------------------------------------------------------------------------------
    async def keys(self, tenant_id: str) -> dict:
        """Every verification key (vkey) the tenant's checkpoints were signed with, oldest first."""
        items = []
        for row in await self.key_rows(tenant_id):
            verifier = Verifier.from_vkey(row["key"])
            items.append({"key": row["key"], "name": verifier.name, "key_id": f"{verifier.key_id:08x}",
                          "algorithm": "Ed25519", "checkpoints": row["checkpoints"], "first_size": row["first_size"],
                          "last_size": row["last_size"], "first_seen": iso(row["first_seen"]),
                          "last_seen": iso(row["last_seen"])})
        return {"items": items}
