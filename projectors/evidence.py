"""The evidence read model (Postgres): every event's hash as a Merkle leaf, and the signed checkpoints.

`leaves` holds one row per event of every tenant, in chain order: (tenant, chain_seq, the 32 bytes of
its hash), which is all RFC 9162's tree over a tenant's chain needs (leaf i = event chain_seq i + 1).
Hashes carry no personal data and a removed leaf would break every later proof, so nothing here is
ever swept. `checkpoints` holds each `checkpoint.signed` event's payload: origin, size, root, the C2SP
signed note and the vkey that signs it.

A checkpoint is checked as it is folded, and one that does not hold together holds its tenant here
(fail closed, as any event this model cannot apply): its note must open with its own key and state its
origin, size and root; its origin must be `runledger/<deployment>/<this tenant>`; its size must be
below its own chain_seq (the tree cannot hold the event that signs it). Whether the root is that of the
stored leaves is checked where proofs are made (queries/evidence.py), against every proof served.
Two checkpoints of one size (a split view) violate a unique index: the tenant is held too.

`nodes` holds every perfect subtree's hash at level >= 1 of each tenant's tree: (tenant, level, idx, hash)
is the root of leaves [idx * 2**level, (idx + 1) * 2**level), as schemas/merkle.py's NodeReader reads it
(level 0 is the RFC 9162 leaf hash of the `leaves` row, computed on read, never stored twice). A node is
written by the poll whose leaf completes it and never changes, so a proof reads O(log n) rows, not n.

Per poll and tenant, the tree before the poll has size (first chain_seq - 1): the poll reads that size's
frontier (the perfect subtrees of its binary decomposition, at most 63 hashes: one query for every tenant
of the poll, level-0 ones from `leaves`), appends its leaves to it as a compact tree does and keeps each
node that completes. A tenant whose frontier is not all stored (its leaves were projected before `nodes`
existed) gets no nodes, logged once: its proofs are made from its leaves (queries/evidence.py).

One poll is one frontier read and one executemany per table (leaves, nodes, and checkpoints when the poll
has any), idempotent on redelivery: a replayed poll, or one that starts part-way into what was stored,
recomputes the same nodes from the same frontier and inserts nothing twice (ON CONFLICT DO NOTHING).
"""
import base64
import binascii
import logging
from typing import Iterable, Sequence

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from projectors.base import Envelope
from projectors.pg import PostgresProjection
from schemas.merkle import leaf_hash, node_hash, subtrees
from schemas.notes import Checkpoint, Verifier

CHECKPOINT_SIGNED = "checkpoint.signed"

DDL = """
CREATE TABLE IF NOT EXISTS {s}.leaves (
    tenant_id text NOT NULL, chain_seq bigint NOT NULL, hash bytea NOT NULL,
    PRIMARY KEY (tenant_id, chain_seq)
);
CREATE TABLE IF NOT EXISTS {s}.checkpoints (
    tenant_id text NOT NULL, chain_seq bigint NOT NULL, origin text NOT NULL, size bigint NOT NULL,
    root bytea NOT NULL, note text NOT NULL, key text NOT NULL, recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, chain_seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_by_size ON {s}.checkpoints (tenant_id, size);
"""
NODES_DDL = """
CREATE TABLE IF NOT EXISTS {s}.nodes (
    tenant_id text NOT NULL, level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
);
"""
# The stored hashes of (tenant, level, idx) triples, one query: nodes for level >= 1, the event hash of leaf
# idx (chain_seq idx + 1) for level 0 (its leaf hash is computed by the caller).
FRONTIER_SQL = """
WITH want AS (SELECT * FROM unnest(%s::text[], %s::smallint[], %s::bigint[]) AS w (tenant_id, level, idx))
SELECT n.tenant_id, n.level, n.idx, n.hash FROM want JOIN {s}.nodes n
    ON n.tenant_id = want.tenant_id AND n.level = want.level AND n.idx = want.idx WHERE want.level > 0
UNION ALL
SELECT l.tenant_id, 0, l.chain_seq - 1, l.hash FROM want JOIN {s}.leaves l
    ON l.tenant_id = want.tenant_id AND l.chain_seq = want.idx + 1 WHERE want.level = 0
"""
log = logging.getLogger(__name__)
Node = tuple[int, int, bytes]  # (level, idx, hash)


def leaf_row(env: Envelope) -> tuple[str, int, bytes]:
    digest = bytes.fromhex(env["hash"])
    if len(digest) != 32:
        raise ValueError(f"chain_seq {env['chain_seq']}: the hash is {len(digest)} bytes, not 32")
    return env["tenant_id"], env["chain_seq"], digest


def checkpoint_row(env: Envelope) -> tuple:
    """The row of a checkpoint.signed event, once its note, key, origin, size and root agree (else ValueError)."""
    p, tenant, seq = env["payload"], env["tenant_id"], env["chain_seq"]
    where = f"checkpoint at chain_seq {seq}"
    try:
        root = base64.b64decode(p["root"], validate=True)
    except (binascii.Error, TypeError):
        raise ValueError(f"{where}: the root is not base64") from None
    if type(p["size"]) is not int:
        raise ValueError(f"{where}: the size {p['size']!r} is not an integer")
    parts = p["origin"].split("/")
    if len(parts) != 3 or parts[0] != "runledger" or parts[2] != tenant:
        raise ValueError(f"{where}: origin {p['origin']!r} is not runledger/<deployment>/{tenant}")
    checkpoint, _ = Checkpoint.open(p["note"].encode(), [Verifier.from_vkey(p["key"])], p["origin"])
    if (checkpoint.size, checkpoint.root) != (p["size"], root):
        raise ValueError(f"{where}: the note says size {checkpoint.size}, root "
                         f"{base64.b64encode(checkpoint.root).decode()}; the payload size {p['size']}, "
                         f"root {p['root']}")
    if not 0 < checkpoint.size < seq:
        raise ValueError(f"{where}: size {checkpoint.size} is not from 1 to {seq - 1} (the events before it)")
    return tenant, seq, p["origin"], checkpoint.size, root, p["note"], p["key"], env["recorded_at"]


def frontier(size: int) -> list[tuple[int, int]]:
    """The (level, idx) of the perfect subtrees of the tree of `size` leaves, largest first (one per set bit)."""
    return subtrees(0, size)


def completed(size: int, hashes: Sequence[bytes], leaf_hashes: Iterable[bytes]) -> list[Node]:
    """Every node at level >= 1 that appending `leaf_hashes` (leaf hashes, in order) to the tree of `size`
    leaves completes, bottom-up in the order they complete; `hashes` is that tree's frontier (`frontier(size)`'s
    hashes, level-0 ones as leaf hashes). As CompactTree.append, keeping what it merges."""
    if len(hashes) != bin(size).count("1"):
        raise ValueError(f"the frontier of a tree of {size} has {bin(size).count('1')} hashes, not {len(hashes)}")
    stack, out = list(hashes), []
    for index, digest in enumerate(leaf_hashes, size):
        level = 0
        while index & 1:  # a right child: merge with the left sibling on top of the stack
            digest = node_hash(stack.pop(), digest)
            level, index = level + 1, index >> 1
            out.append((level, index, digest))
        stack.append(digest)
    return out


def tenant_runs(leaves: Sequence[tuple[str, int, bytes]]) -> dict[str, tuple[int, list[bytes]]]:
    """Each tenant's leaves of a poll as (the tree size before them, their event hashes in order). A tenant's
    events in a poll follow each other (the runner admits only those that continue its chain); any other
    order is refused (ValueError) rather than given nodes of some other tree."""
    runs: dict[str, tuple[int, list[bytes]]] = {}
    for tenant, seq, digest in leaves:
        before, hashes = runs.setdefault(tenant, (seq - 1, []))
        if seq != before + len(hashes) + 1:
            raise ValueError(f"tenant {tenant}: chain_seq {seq} follows {before + len(hashes)} in this poll")
        hashes.append(digest)
    return runs


class EvidenceProjection(PostgresProjection):
    name = "evidence"
    ddl = DDL + NODES_DDL

    def __init__(self, pool: AsyncConnectionPool, topic_prefix: str, generation: int | None = None):
        super().__init__(pool, topic_prefix, generation)
        self.unnoded: set[str] = set()  # tenants already logged as having no stored frontier

    async def open(self) -> "EvidenceProjection":
        await super().open()
        async with self.pool.connection() as conn:  # a generation made before nodes existed gets the table
            await self.generations.serialise(conn, self.name)
            await conn.execute(NODES_DDL.format(s=self.schema))
        return self

    async def frontiers(self, conn: AsyncConnection, runs: dict[str, tuple[int, list[bytes]]]
                        ) -> dict[str, list[bytes] | None]:
        """Each tenant's frontier hashes before its leaves of this poll (None: not all stored), in one query."""
        want = [(t, level, idx) for t, (size, _) in runs.items() for level, idx in frontier(size)]
        found: dict[tuple[str, int, int], bytes] = {}
        if want:
            tenants, levels, indices = (list(c) for c in zip(*want))
            cur = await conn.execute(FRONTIER_SQL.format(s=self.schema), (tenants, levels, indices))
            found = {(t, level, idx): leaf_hash(bytes(h)) if level == 0 else bytes(h)
                     for t, level, idx, h in await cur.fetchall()}
        out: dict[str, list[bytes] | None] = {}
        for tenant, (size, _) in runs.items():
            hashes = [found.get((tenant, level, idx)) for level, idx in frontier(size)]
            out[tenant] = None if None in hashes else hashes
        return out

    async def node_rows(self, conn: AsyncConnection, leaves: list[tuple[str, int, bytes]]) -> list[tuple]:
        runs = tenant_runs(leaves)
        rows = []
        for tenant, hashes in (await self.frontiers(conn, runs)).items():
            size, digests = runs[tenant]
            if hashes is None:
                if tenant not in self.unnoded:
                    self.unnoded.add(tenant)
                    log.warning("evidence projection %s: tenant %s has no stored frontier at size %d (its leaves "
                                "were projected before the nodes table): it gets no nodes, and its proofs are "
                                "made from its leaves until the evidence read model is rebuilt",
                                self.schema, tenant, size)
                continue
            rows += [(tenant, level, idx, h) for level, idx, h in completed(size, hashes, map(leaf_hash, digests))]
        return rows

    async def write(self, conn: AsyncConnection, envelopes: list[Envelope]) -> None:
        leaves = [leaf_row(env) for env in envelopes]
        checkpoints = [checkpoint_row(env) for env in envelopes if env["type"] == CHECKPOINT_SIGNED]
        nodes = await self.node_rows(conn, leaves)
        async with conn.cursor() as cur:
            if leaves:
                await cur.executemany(f"INSERT INTO {self.schema}.leaves VALUES (%s, %s, %s) "
                                      "ON CONFLICT DO NOTHING", leaves)
            if nodes:
                await cur.executemany(f"INSERT INTO {self.schema}.nodes VALUES (%s, %s, %s, %s) "
                                      "ON CONFLICT DO NOTHING", nodes)
            if checkpoints:
                await cur.executemany(f"INSERT INTO {self.schema}.checkpoints VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                                      "ON CONFLICT (tenant_id, chain_seq) DO NOTHING", checkpoints)
