"""The evidence read model on real PostgreSQL, read through the evidence routes (in-process ASGI, real auth).

Two tenants' chains come from real commands through the pure domain (tests/unit/harness.py), resealed in
order with `checkpoint.signed` events sealed in between, as the processor records them: each signs (C2SP
note, Ed25519) the RFC 9162 root over the chain before it, and is itself a leaf of every later tree.
A signs sizes 5, 13 and 21 (the last with a rotated key) and goes on 5 events past its last checkpoint;
B signs size 4 and goes on; C has events and no checkpoint. The chains are folded in three polls that mix
the tenants, one of them delivered twice. Every proof served must verify against the root of the note we
signed (not the one the read model keeps), and equal the list-based RFC 9162 proof. The fold stores every
perfect subtree's hash (exactly TreeStore's), and a proof reads those it needs, O(log n) rows: the reads of
the query side are recorded (every statement and the rows it returned), not timed.
"""
import base64
import logging
import uuid
from dataclasses import dataclass

import httpx
import pytest
from psycopg.errors import UniqueViolation

from infra.adapters.http.app import create_app
from infra.adapters.postgres import open_pool
from projectors.base import Batch
from projectors.evidence import EvidenceProjection
from queries.api import routes_evidence
from queries.evidence import Evidence
from queries.readmodels import ReadModels
from schemas import merkle
from schemas.merkle_trees import TreeStore
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import GENESIS_HASH, seal
from schemas.notes import Checkpoint, Signer, tenant_origin
from tests.support import make_settings, token
from tests.unit.harness import Harness

A, B, C = "ev-a", "ev-b", "ev-c"
SIGNERS = {t: Signer(tenant_origin("test", t), bytes([n] * 32)) for n, t in enumerate((A, B), 1)}
ROTATED = Signer(tenant_origin("test", A), bytes([9] * 32))
PLAN = {A: (11, {5: SIGNERS[A], 13: SIGNERS[A], 21: ROTATED}), B: (3, {4: SIGNERS[B]}), C: (1, {})}
A_SIZES = (5, 13, 21)


def seal_next(chain: list[dict], fields: dict) -> dict:
    """Seal the tenant's next envelope: fields, at the next chain_seq, after the chain's head."""
    return seal({**fields, "chain_seq": len(chain) + 1, "prev_hash": chain[-1]["hash"] if chain else GENESIS_HASH})


def checkpoint_event(chain: list[dict], signer: Signer) -> dict:
    size, root = len(chain), merkle.root([bytes.fromhex(e["hash"]) for e in chain])
    tenant, version = chain[-1]["tenant_id"], sum(e["type"] == "checkpoint.signed" for e in chain) + 1
    return seal_next(chain, {
        **{k: v for k, v in chain[-1].items() if k != "hash"}, "event_id": str(uuid.uuid4()),
        "type": "checkpoint.signed", "schema_version": 1, "aggregate_type": "checkpoint",
        "aggregate_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"runledger:checkpoints:{tenant}")),
        "aggregate_version": version, "actor": {"subject": "runledger:checkpoints", "roles": ["system"]},
        "command_id": None, "causation_id": None, "correlation_id": None, "traceparent": None,
        "payload": {"origin": signer.name, "size": size, "root": base64.b64encode(root).decode(),
                    "note": Checkpoint(signer.name, size, root).sign([signer]).decode(), "key": signer.vkey}})


def chain_of(tenant: str) -> list[dict]:
    """A run with `steps` steps through the domain, resealed with a checkpoint after each planned size."""
    steps, checkpoints = PLAN[tenant]
    h = Harness(tenant)
    run = h.running_run()
    for _ in range(steps):
        step = h.ok({"type": "StartStep", "run_id": run, "kind": "llm", "name": "think"})
        h.ok({"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "succeeded"})
    chain: list[dict] = []
    for env in h.log:
        chain.append(seal_next(chain, {k: v for k, v in env.items() if k != "hash"}))
        if len(chain) in checkpoints:
            chain.append(checkpoint_event(chain, checkpoints[len(chain)]))
    assert verify_chain(tenant, chain) == ChainVerdict(True, len(chain), chain[-1]["hash"])
    return chain


CHAINS = {t: chain_of(t) for t in PLAN}


def hashes(tenant: str) -> list[bytes]:
    return [bytes.fromhex(e["hash"]) for e in CHAINS[tenant]]


def signed(tenant: str, size: int) -> tuple[dict, bytes]:
    """The checkpoint event of that size, and the root its note signs (opened with the key it names)."""
    env = next(e for e in CHAINS[tenant] if e["type"] == "checkpoint.signed" and e["payload"]["size"] == size)
    opened, _ = Checkpoint.open(env["payload"]["note"].encode(), [PLAN[tenant][1][size].verifier], SIGNERS[tenant].name)
    return env, opened.root


def served(tenant: str, size: int) -> dict:
    env, root = signed(tenant, size)
    return {**{k: env["payload"][k] for k in ("origin", "size", "note", "key")},
            "root": base64.b64encode(root).decode(),
            "chain_seq": env["chain_seq"], "recorded_at": env["recorded_at"]}


def polls() -> list[list[Batch]]:
    """Three polls that mix the tenants, each cutting every chain at the same places."""
    chains = list(CHAINS.values())
    return [[Batch(0, [e for c in chains for e in c[lo:hi]], n + 1)]
            for n, (lo, hi) in enumerate([(0, 6), (6, 15), (15, 99)])]


class Recorded(ReadModels):
    """The read models, recording each read: (the statement, its parameters, the rows it returned)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads: list[tuple[str, tuple, list[dict]]] = []

    async def fetch(self, name, sql, params):
        rows = await super().fetch(name, sql, params)
        self.reads.append((sql, params, rows))
        return rows


@dataclass
class World:
    projection: EvidenceProjection
    pool: object
    http: httpx.AsyncClient
    models: Recorded


@pytest.fixture
async def world():
    settings = make_settings()
    pool = await open_pool(settings, max_size=3)
    projection = await EvidenceProjection(pool, settings.topic_prefix).open()
    first, second, third = polls()
    for poll in (first, second, second, third):  # the second poll is delivered twice
        await projection.apply(poll)
    models = Recorded(pool, settings.topic_prefix)
    app = create_app(settings, [routes_evidence.router], {"evidence": Evidence(models)})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://evidence") as http:
        try:
            yield World(projection, pool, http, models)
        finally:
            async with pool.connection() as conn:
                await conn.execute("DELETE FROM public.runledger_projections WHERE name LIKE %s",
                                   (f"{settings.topic_prefix}:%",))
                await conn.execute(f"DROP SCHEMA {projection.schema} CASCADE")
            await pool.close()


async def get(http, path: str, tenant: str, roles: tuple[str, ...] = ("auditor",), **params) -> httpx.Response:
    return await http.get(f"/v1/evidence/{path}", params=params,
                          headers={"Authorization": f"Bearer {token(tenant, 'aud', roles)}"})


async def rows(pool, sql: str) -> list[tuple]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql)).fetchall()


async def test_the_fold_keeps_every_leaf_once_and_each_checkpoint(world):
    projection, pool = world.projection, world.pool
    s = projection.schema
    assert await rows(pool, f"SELECT tenant_id, chain_seq, hash FROM {s}.leaves ORDER BY tenant_id, chain_seq") == \
        [(t, e["chain_seq"], bytes.fromhex(e["hash"])) for t in sorted(CHAINS) for e in CHAINS[t]]
    assert [len(CHAINS[t]) for t in (A, B, C)] == [27, 9, 4]
    checkpoints = f"SELECT tenant_id, size, chain_seq, key FROM {s}.checkpoints ORDER BY tenant_id, size"
    assert await rows(pool, checkpoints) == [
        (A, 5, 6, SIGNERS[A].vkey), (A, 13, 14, SIGNERS[A].vkey), (A, 21, 22, ROTATED.vkey), (B, 4, 5, SIGNERS[B].vkey)]
    assert [await projection.head(t) for t in (A, B, C)] == [(len(c), c[-1]["hash"]) for c in CHAINS.values()]


async def test_every_inclusion_proof_of_every_chain_seq_verifies_against_the_signed_root(world):
    http = world.http
    for tenant, sizes in ((A, A_SIZES), (B, (4,))):
        leaves = hashes(tenant)
        for size in (*sizes, None):  # None: the latest checkpoint, by default
            tree_size = size or sizes[-1]
            _, root = signed(tenant, tree_size)
            for seq in range(1, tree_size + 1):
                response = await get(http, "inclusion", tenant, chain_seq=seq, **({"size": size} if size else {}))
                assert response.status_code == 200, response.text
                got = response.json()
                merkle.check_inclusion(bytes.fromhex(got["leaf_hash"]), seq - 1, tree_size,
                                       [bytes.fromhex(h) for h in got["proof"]], root)
                assert got == {"chain_seq": seq, "leaf_index": seq - 1, "tree_size": tree_size,
                               "leaf_hash": merkle.leaf_hash(leaves[seq - 1]).hex(),
                               "event_hash": CHAINS[tenant][seq - 1]["hash"],
                               "proof": [h.hex() for h in merkle.inclusion_proof(leaves[:tree_size], seq - 1)],
                               "checkpoint": served(tenant, tree_size)}


async def test_consistency_between_signed_checkpoints_verifies(world):
    http = world.http
    leaves = hashes(A)
    for old, new in ((5, 13), (5, 21), (13, 21), (13, 13), (5, None), (21, None)):
        response = await get(http, "consistency", A, old_size=old, **({"new_size": new} if new else {}))
        assert response.status_code == 200, response.text
        got, new = response.json(), new or 21
        (_, old_root), (_, new_root) = signed(A, old), signed(A, new)
        merkle.check_consistency(old, new, old_root, new_root, [bytes.fromhex(h) for h in got["proof"]])
        assert got == {"old_size": old, "new_size": new, "old_root": old_root.hex(), "new_root": new_root.hex(),
                       "proof": [h.hex() for h in merkle.consistency_proof(leaves, old, new)],
                       "old_checkpoint": served(A, old), "new_checkpoint": served(A, new)}
    assert got["proof"] == []


async def test_checkpoints_and_keys_are_the_tenants_own(world):
    http = world.http
    assert (await get(http, "checkpoint", A)).json() == served(A, 21)
    at_least = [(await get(http, "checkpoint", A, size=s)).json()["size"] for s in (1, 5, 6, 13, 14, 21)]
    assert at_least == [5, 5, 13, 13, 21, 21]
    assert (await get(http, "checkpoint", B, ("admin",))).json() == served(B, 4)
    keys = {t: (await get(http, "keys", t)).json()["items"] for t in (A, B, C)}
    seen = {t: [(k["key"], k["name"], k["checkpoints"], k["first_size"], k["last_size"]) for k in items]
            for t, items in keys.items()}
    assert [seen[t] for t in (A, B, C)] == [
        [(SIGNERS[A].vkey, "runledger/test/ev-a", 2, 5, 13), (ROTATED.vkey, "runledger/test/ev-a", 1, 21, 21)],
        [(SIGNERS[B].vkey, "runledger/test/ev-b", 1, 4, 4)], []]
    assert keys[A][1]["key_id"] == f"{ROTATED.key_id:08x}" and keys[A][1]["first_seen"] == served(A, 21)["recorded_at"]


async def test_another_tenants_chain_seq_answers_like_one_that_does_not_exist(world):
    http = world.http
    theirs, nowhere = await get(http, "inclusion", B, chain_seq=15), await get(http, "inclusion", B, chain_seq=7777777)
    assert (await get(http, "inclusion", A, chain_seq=15)).status_code == 200
    assert theirs.status_code == nowhere.status_code == 404
    assert theirs.json() == {"status": "rejected", "code": "not_checkpointed", "details": {"latest_size": 4},
                             "reason": "chain_seq 15 is beyond this tenant's latest signed checkpoint, of size 4 "
                                       "(chain_seq 1 to 4); a later checkpoint will cover it"}
    assert nowhere.json() == {**theirs.json(), "reason": theirs.json()["reason"].replace("15", "7777777", 1)}
    for path, params in (("checkpoint", {}), ("inclusion", {"chain_seq": 1}), ("consistency", {"old_size": 4})):
        response = await get(http, path, C, **params)
        assert (response.status_code, response.json()["code"]) == (404, "no_checkpoint")
    response = await get(http, "consistency", B, old_size=4, new_size=5)
    assert (response.status_code, response.json()["code"]) == (404, "not_checkpointed")


BAD = [
    ("inclusion", {"chain_seq": 0}, 400, "invalid_chain_seq"),
    ("inclusion", {"chain_seq": -1}, 400, "invalid_chain_seq"),
    ("inclusion", {"chain_seq": 2 ** 63}, 400, "invalid_chain_seq"),
    ("inclusion", {"chain_seq": 3, "size": 0}, 400, "invalid_size"),
    ("inclusion", {"chain_seq": 14, "size": 13}, 400, "invalid_range"),
    ("inclusion", {"chain_seq": 22}, 404, "not_checkpointed"),
    ("inclusion", {"chain_seq": 3, "size": 27}, 404, "not_checkpointed"),
    ("inclusion", {"chain_seq": 3, "size": 12}, 404, "not_a_checkpoint"),
    ("inclusion", {"chain_seq": "x"}, 422, "invalid_request"),
    ("inclusion", {}, 422, "invalid_request"),
    ("consistency", {"old_size": 13, "new_size": 5}, 400, "invalid_range"),
    ("consistency", {"old_size": 0}, 400, "invalid_size"),
    ("consistency", {"old_size": 5, "new_size": 22}, 404, "not_checkpointed"),
    ("consistency", {"old_size": 22}, 404, "not_checkpointed"),
    ("consistency", {"old_size": 6, "new_size": 13}, 404, "not_a_checkpoint"),
    ("checkpoint", {"size": 22}, 404, "not_checkpointed"),
    ("checkpoint", {"size": 0}, 400, "invalid_size"),
    ("checkpoint", {"min_seq": 28, "wait_ms": 0}, 503, "not_caught_up"),
]


@pytest.mark.parametrize("path, params, status, code", BAD)
async def test_bad_input_is_refused_with_its_own_code(world, path, params, status, code):
    response = await get(world.http, path, A, **params)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


async def test_only_auditors_and_admins_may_read_evidence(world):
    http = world.http
    assert [(await get(http, "checkpoint", A, roles)).status_code for roles in
            (("auditor",), ("admin",), ("operator",), ("approver", "policy"))] == [200, 200, 403, 403]
    assert (await http.get("/v1/evidence/keys")).status_code == 401


async def refused(http, path: str, tenant: str, sizes: list[int], **params) -> dict:
    response = await get(http, path, tenant, **params)
    assert (response.status_code, response.json()["code"], response.json()["details"]) == \
        (500, "evidence_mismatch", {"tenant_id": tenant, "sizes": sizes}), response.text
    return response.json()


async def verified_inclusion(http, tenant: str, seq: int, size: int) -> None:
    response = await get(http, "inclusion", tenant, chain_seq=seq, size=size)
    assert response.status_code == 200, response.text
    proof = [bytes.fromhex(h) for h in response.json()["proof"]]
    assert proof == merkle.inclusion_proof(hashes(tenant)[:size], seq - 1)
    merkle.check_inclusion(merkle.leaf_hash(hashes(tenant)[seq - 1]), seq - 1, size, proof, signed(tenant, size)[1])


async def test_a_tampered_leaf_row_answers_evidence_mismatch_never_a_wrong_proof(world):
    projection, pool, http = world.projection, world.pool, world.http
    async with pool.connection() as conn:
        await conn.execute(f"UPDATE {projection.schema}.leaves SET hash = %s WHERE tenant_id = %s AND chain_seq = 9",
                           (b"\x11" * 32, A))
    # every proof that reads leaf 9 (its own, or its sibling's: chain_seq 10) is refused
    for params in ({"chain_seq": 9}, {"chain_seq": 10}, {"chain_seq": 9, "size": 13}, {"chain_seq": 10, "size": 13}):
        size = params.get("size", 21)
        got = await refused(http, "inclusion", A, [size], **params)
        assert got["reason"].startswith(f"the evidence read model of tenant {A} disagrees with its signed "
                                        f"checkpoint of size {size}: inclusion of leaf ")
    # those that read a node above it (stored when the leaf was folded) do not read the altered row: they are
    # the true proofs, and verify against the signed root
    for seq, size in ((1, 21), (20, 21), (2, 13), (16, 21)):
        await verified_inclusion(http, A, seq, size)
    # without the nodes (a generation from before them) every proof over it is made from all the leaves: refused
    async with pool.connection() as conn:
        await conn.execute(f"DELETE FROM {projection.schema}.nodes WHERE tenant_id = %s", (A,))
    for params in ({"chain_seq": 9}, {"chain_seq": 1}, {"chain_seq": 20, "size": 21}, {"chain_seq": 2, "size": 13}):
        got = await refused(http, "inclusion", A, [params.get("size", 21)], **params)
        assert "inclusion of leaf " in got["reason"]
    await refused(http, "consistency", A, [5, 13], old_size=5, new_size=13)
    # what the altered leaf is not under still verifies, and B is untouched
    for tenant, size in ((A, 5), (B, 4)):
        await verified_inclusion(http, tenant, 3, size)


async def test_a_tampered_node_row_answers_evidence_mismatch_for_every_proof_that_reads_it(world):
    projection, pool, http = world.projection, world.pool, world.http
    async with pool.connection() as conn:  # node (2, 2): the subtree over chain_seq 9..12
        cur = await conn.execute(f"UPDATE {projection.schema}.nodes SET hash = %s WHERE tenant_id = %s AND level = 2 "
                                 "AND idx = 2", (b"\x22" * 32, A))
        assert cur.rowcount == 1
    await refused(http, "inclusion", A, [13], chain_seq=1, size=13)
    await refused(http, "inclusion", A, [13], chain_seq=13, size=13)
    await refused(http, "consistency", A, [5, 13], old_size=5, new_size=13)
    await refused(http, "consistency", A, [13, 21], old_size=13)
    for seq, size in ((1, 21), (9, 13), (12, 21), (3, 5)):  # the (3, 1) above it, or its own leaves below it
        await verified_inclusion(http, A, seq, size)


def reference(tenant: str) -> list[tuple[int, int, bytes]]:
    """TreeStore's every perfect subtree at level >= 1 of the tenant's whole chain, ordered as the query orders."""
    store, n = TreeStore.from_leaves(hashes(tenant)), len(CHAINS[tenant])
    return [(level, i, store.node(level, i)) for level in range(1, n.bit_length()) for i in range(n >> level)]


async def evidence_tables(pool, schema: str) -> dict[str, list[tuple]]:
    return {table: await rows(pool, f"SELECT * FROM {schema}.{table} ORDER BY 1, 2, 3")
            for table in ("leaves", "nodes", "checkpoints")}


async def test_the_fold_stores_exactly_tree_stores_nodes_and_a_replayed_poll_changes_nothing(world):
    projection, pool = world.projection, world.pool
    s = projection.schema
    for tenant in (A, B, C):
        assert await rows(pool, f"SELECT level, idx, hash FROM {s}.nodes WHERE tenant_id = '{tenant}' "
                                "ORDER BY level, idx") == reference(tenant), tenant
    assert [len(reference(t)) for t in (A, B, C)] == [27 - 4, 9 - 2, 4 - 1]  # n - popcount(n) each
    before = await evidence_tables(pool, s)
    part_way = [Batch(0, CHAINS[A][10:20] + CHAINS[B][2:9] + CHAINS[C][1:4], None)]  # from inside what is stored
    for poll in (polls()[1], part_way, polls()[2], polls()[0]):
        await projection.apply(poll)
        assert await evidence_tables(pool, s) == before


def table_of(sql: str) -> str:
    return sql.split("FROM {s}.", 1)[1].split(" ", 1)[0]


async def test_a_proof_reads_the_log_n_rows_it_needs_in_one_query_never_every_leaf(world):
    http, models = world.http, world.models
    models.reads.clear()
    await verified_inclusion(http, A, 9, 21)
    # leaf 8 itself and its path in the tree of 21: (0, 9), (1, 5), (2, 3), (3, 0), and [16, 21) as (2, 4), (0, 20)
    assert [(table_of(sql), len(got)) for sql, _, got in models.reads] == \
        [("held", 0), ("checkpoints", 1), ("nodes", 7)]
    assert sorted((r["level"], r["idx"]) for r in models.reads[-1][2]) == \
        [(0, 8), (0, 9), (0, 20), (1, 5), (2, 3), (2, 4), (3, 0)]
    models.reads.clear()
    response = await get(http, "consistency", A, old_size=5, new_size=21)
    assert response.status_code == 200 and response.json()["proof"] == \
        [h.hex() for h in merkle.consistency_proof(hashes(A), 5, 21)]
    assert [(table_of(sql), len(got)) for sql, _, got in models.reads] == \
        [("held", 0), ("checkpoints", 1), ("checkpoints", 1), ("checkpoints", 1), ("nodes", 7)]
    # [16, 21) as (2, 4), (0, 20); (3, 1); (2, 0); then inside [4, 8): (1, 3), (0, 5), and the old tree's (0, 4)
    assert sorted((r["level"], r["idx"]) for r in models.reads[-1][2]) == \
        [(0, 4), (0, 5), (0, 20), (1, 3), (2, 0), (2, 4), (3, 1)]


async def answers(http) -> list[dict]:
    out = []
    for seq in range(1, 22):
        for size in (s for s in A_SIZES if s >= seq):
            out.append((await get(http, "inclusion", A, chain_seq=seq, size=size)).json())
    for old, new in ((5, 13), (5, 21), (13, 21), (21, 21)):
        out.append((await get(http, "consistency", A, old_size=old, new_size=new)).json())
    return out


async def test_without_the_nodes_table_proofs_come_from_the_leaves_identical_and_it_is_logged_once(world, caplog):
    projection, pool, http, models = world.projection, world.pool, world.http, world.models
    caplog.set_level(logging.WARNING, logger="queries.evidence")
    from_nodes = await answers(http)
    assert all("proof" in a for a in from_nodes) and not any(table_of(sql) == "leaves" for sql, _, _ in models.reads)
    async with pool.connection() as conn:  # the generation as it was before the nodes table
        await conn.execute(f"DROP TABLE {projection.schema}.nodes")
    models.reads.clear()
    assert await answers(http) == from_nodes
    # every answer read all its leaves, but consistency 21 → 21, which reads nothing
    assert [table_of(sql) for sql, _, _ in models.reads].count("leaves") == len(from_nodes) - 1
    # the projector, opened on it again, gives it an empty nodes table: nothing stored yet, the same answers
    await EvidenceProjection(pool, projection.prefix).open()
    assert await rows(pool, f"SELECT count(*) FROM {projection.schema}.nodes") == [(0,)]
    assert await answers(http) == from_nodes
    lines = [r.getMessage() for r in caplog.records if r.name == "queries.evidence"]
    assert len(lines) == 1 and lines[0].startswith(f"evidence: tenant {A}: ") and "are not stored" in lines[0]


async def test_a_checkpoint_that_does_not_hold_together_is_refused_by_the_fold(world):
    projection = world.projection
    chain = CHAINS[B]
    good = checkpoint_event(chain, SIGNERS[B])
    forged = {**{k: v for k, v in good.items() if k != "hash"}}
    cases = [({**forged["payload"], "key": ROTATED.vkey}, "no signature by a known key"),
             ({**forged["payload"], "size": 8}, "the note says size 9"),
             ({**forged["payload"], "origin": "runledger/test/ev-a"}, "is not runledger/<deployment>/ev-b")]
    for payload, problem in cases:
        with pytest.raises(ValueError, match=problem) as refused:
            await projection.probe([seal({**forged, "payload": payload})])
        assert projection.deterministic(refused.value)
    # a second checkpoint of a size already signed (a split view) violates the unique size index
    again = seal({**forged, "payload": signed(B, 4)[0]["payload"]})  # chain_seq 10, size 4
    with pytest.raises(UniqueViolation) as refused:
        await projection.probe([again])
    assert projection.deterministic(refused.value)
