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

One poll is one executemany of leaves (plus one of checkpoints when the poll has any), idempotent on
redelivery: a replayed poll inserts nothing twice (ON CONFLICT DO NOTHING on (tenant, chain_seq)).
"""
import base64
import binascii

from psycopg import AsyncConnection

from projectors.base import Envelope
from projectors.pg import PostgresProjection
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


class EvidenceProjection(PostgresProjection):
    name = "evidence"
    ddl = DDL

    async def write(self, conn: AsyncConnection, envelopes: list[Envelope]) -> None:
        leaves = [leaf_row(env) for env in envelopes]
        checkpoints = [checkpoint_row(env) for env in envelopes if env["type"] == CHECKPOINT_SIGNED]
        async with conn.cursor() as cur:
            if leaves:
                await cur.executemany(f"INSERT INTO {self.schema}.leaves VALUES (%s, %s, %s) "
                                      "ON CONFLICT DO NOTHING", leaves)
            if checkpoints:
                await cur.executemany(f"INSERT INTO {self.schema}.checkpoints VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                                      "ON CONFLICT (tenant_id, chain_seq) DO NOTHING", checkpoints)
