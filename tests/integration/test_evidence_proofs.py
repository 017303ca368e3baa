"""The evidence read model on real PostgreSQL, read through the evidence routes (in-process ASGI, real auth).

Two tenants' chains come from real commands through the pure domain (tests/unit/harness.py), resealed in
order with `checkpoint.signed` events sealed in between, as the processor records them: each signs (C2SP
note, Ed25519) the RFC 9162 root over the chain before it, and is itself a leaf of every later tree.
A signs sizes 5, 13 and 21 (the last with a rotated key) and goes on 5 events past its last checkpoint;
B signs size 4 and goes on; C has events and no checkpoint. The chains are folded in three polls that mix
the tenants, one of them delivered twice. Every proof served must verify against the root of the note we
signed (not the one the read model keeps), and equal the list-based RFC 9162 proof.
"""
import base64
import uuid

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


@pytest.fixture
async def world():
    settings = make_settings()
    pool = await open_pool(settings, max_size=3)
    projection = await EvidenceProjection(pool, settings.topic_prefix).open()
    chains = list(CHAINS.values())
    polls = [[Batch(0, [e for c in chains for e in c[lo:hi]], n + 1)]
             for n, (lo, hi) in enumerate([(0, 6), (6, 15), (15, 99)])]
    for poll in (polls[0], polls[1], polls[1], polls[2]):  # the second poll is delivered twice
        await projection.apply(poll)
    evidence = Evidence(ReadModels(pool, settings.topic_prefix))
    app = create_app(settings, [routes_evidence.router], {"evidence": evidence})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://evidence") as http:
        try:
            yield projection, pool, http
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
    projection, pool, _ = world
    s = projection.schema
    assert await rows(pool, f"SELECT tenant_id, chain_seq, hash FROM {s}.leaves ORDER BY tenant_id, chain_seq") == \
        [(t, e["chain_seq"], bytes.fromhex(e["hash"])) for t in sorted(CHAINS) for e in CHAINS[t]]
    assert [len(CHAINS[t]) for t in (A, B, C)] == [27, 9, 4]
    checkpoints = f"SELECT tenant_id, size, chain_seq, key FROM {s}.checkpoints ORDER BY tenant_id, size"
    assert await rows(pool, checkpoints) == [
        (A, 5, 6, SIGNERS[A].vkey), (A, 13, 14, SIGNERS[A].vkey), (A, 21, 22, ROTATED.vkey), (B, 4, 5, SIGNERS[B].vkey)]
    assert [await projection.head(t) for t in (A, B, C)] == [(len(c), c[-1]["hash"]) for c in CHAINS.values()]


async def test_every_inclusion_proof_of_every_chain_seq_verifies_against_the_signed_root(world):
    _, _, http = world
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
    _, _, http = world
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
    _, _, http = world
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
    _, _, http = world
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
    response = await get(world[2], path, A, **params)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


async def test_only_auditors_and_admins_may_read_evidence(world):
    _, _, http = world
    assert [(await get(http, "checkpoint", A, roles)).status_code for roles in
            (("auditor",), ("admin",), ("operator",), ("approver", "policy"))] == [200, 200, 403, 403]
    assert (await http.get("/v1/evidence/keys")).status_code == 401


async def test_a_tampered_leaf_row_answers_evidence_mismatch_never_a_wrong_proof(world):
    projection, pool, http = world
    async with pool.connection() as conn:
        await conn.execute(f"UPDATE {projection.schema}.leaves SET hash = %s WHERE tenant_id = %s AND chain_seq = 9",
                           (b"\x11" * 32, A))
    for params in ({"chain_seq": 9}, {"chain_seq": 1}, {"chain_seq": 20, "size": 21}, {"chain_seq": 2, "size": 13}):
        response = await get(http, "inclusion", A, **params)
        size = params.get("size", 21)
        assert (response.status_code, response.json()["code"], response.json()["details"]) == \
            (500, "evidence_mismatch", {"tenant_id": A, "sizes": [size]}), response.text
        assert response.json()["reason"].startswith(f"the evidence read model of tenant {A} disagrees with its signed "
                                                    f"checkpoint of size {size}: inclusion of leaf ")
    response = await get(http, "consistency", A, old_size=5, new_size=13)
    assert (response.status_code, response.json()["details"]) == (500, {"tenant_id": A, "sizes": [5, 13]})
    # what the altered leaf is not under still verifies, and B is untouched
    untouched = [await get(http, "inclusion", t, chain_seq=3, size=s) for t, s in ((A, 5), (B, 4))]
    assert [r.status_code for r in untouched] == [200, 200]


async def test_a_checkpoint_that_does_not_hold_together_is_refused_by_the_fold(world):
    projection = world[0]
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
