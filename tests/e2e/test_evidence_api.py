"""Signed checkpoints and proofs over real HTTP, Kafka and PostgreSQL: `runledger serve` signs each tenant's
tree head every 6 unsigned events, and everything the evidence API serves verifies offline, with nothing
but the README's rules, the event hashes the audit search shows and the key derived from the deployment's
signing seed (tests.support.SIGNING_KEY): notes, inclusion proofs of every event, and the consistency of
one checkpoint with the next (whose tree holds the first checkpoint's own event as a leaf)."""
import base64

import httpx
import pytest

from schemas import merkle
from schemas.notes import Checkpoint, Signer, Verifier
from tests.support import SIGNING_KEY, Service, make_settings, token, unique, wait_until

EVERY = 6


@pytest.fixture(scope="module")
async def api():
    svc = Service(make_settings(checkpoint_every=EVERY, checkpoint_interval_s=0)).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


def auth(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'agent', roles or ('operator',))}"}


async def ok(http, tenant: str, body: dict) -> dict:
    response = await http.post("/v1/commands", json=body, headers=auth(tenant))
    assert response.status_code == 200, response.text
    return response.json()


async def steps(http, tenant: str, run: str, pairs: int) -> int:
    """Start and finish `pairs` steps of the run; the last event's chain_seq."""
    for _ in range(pairs):
        step = (await ok(http, tenant, {"type": "StartStep", "run_id": run, "kind": "llm", "name": "think"}))
        reply = await ok(http, tenant, {"type": "FinishStep", "run_id": run, "step_id": step["aggregate_id"],
                                        "outcome": "succeeded"})
    return reply["events"][-1]["chain_seq"]


async def evidence(http, path: str, tenant: str, *roles: str, **params) -> httpx.Response:
    return await http.get(f"/v1/evidence/{path}", params=params, headers=auth(tenant, *(roles or ("auditor",))))


async def checkpoint_beyond(http, tenant: str, size: int) -> dict:
    """The latest checkpoint once one is larger than `size` (the processor signs on its own timer)."""
    async def signed():
        response = await evidence(http, "checkpoint", tenant)
        return response.json() if response.status_code == 200 and response.json()["size"] > size else None
    return await wait_until(signed, 60, f"a checkpoint of {tenant} beyond size {size}")


async def chain(http, tenant: str, min_seq: int) -> list[dict]:
    """Every event of the tenant up to min_seq (and what follows), in chain order, from the audit search."""
    response = await http.get("/v1/audit/events", headers=auth(tenant, "auditor"),
                              params={"min_seq": min_seq, "wait_ms": 10000, "limit": 500})
    assert response.status_code == 200, response.text
    events = sorted(response.json()["items"], key=lambda e: e["chain_seq"])
    assert [e["chain_seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def opened(cp: dict, tenant: str) -> Checkpoint:
    """The checkpoint's note, verified with the key derived here from the signing seed (not the one served)."""
    origin = f"runledger/local/{tenant}"
    signer = Signer(origin, base64.b64decode(SIGNING_KEY))
    assert (cp["origin"], cp["key"], Verifier.from_vkey(cp["key"]).key_id) == (origin, signer.vkey, signer.key_id)
    checkpoint, verified = Checkpoint.open(cp["note"].encode(), [signer.verifier], origin)
    assert (checkpoint.size, base64.b64encode(checkpoint.root).decode(), verified) == (cp["size"], cp["root"],
                                                                                        [signer.verifier])
    return checkpoint


async def test_every_checkpoint_proof_and_key_the_api_serves_verifies_offline(api):
    tenant = unique("ev-")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        run = (await ok(http, tenant, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
        await ok(http, tenant, {"type": "StartRun", "run_id": run})
        last = await steps(http, tenant, run, 2)
        first_cp = await checkpoint_beyond(http, tenant, 0)
        first = opened(first_cp, tenant)
        events = await chain(http, tenant, first_cp["chain_seq"])
        hashes = [bytes.fromhex(e["hash"]) for e in events]
        assert EVERY <= first.size < first_cp["chain_seq"] and last <= len(events)
        assert events[first_cp["chain_seq"] - 1]["type"] == "checkpoint.signed"
        assert merkle.root(hashes[:first.size]) == first.root

        for seq in range(1, first.size + 1):
            response = await evidence(http, "inclusion", tenant, chain_seq=seq, size=first.size)
            assert response.status_code == 200, response.text
            got = response.json()
            assert (got["event_hash"], got["leaf_index"], got["tree_size"]) == (events[seq - 1]["hash"], seq - 1,
                                                                                first.size)
            merkle.check_inclusion(merkle.leaf_hash(hashes[seq - 1]), seq - 1, first.size,
                                   [bytes.fromhex(h) for h in got["proof"]], first.root)

        # More events: the next checkpoint's tree holds the first checkpoint's own event
        await steps(http, tenant, run, 4)
        second_cp = await checkpoint_beyond(http, tenant, first_cp["chain_seq"])
        second = opened(second_cp, tenant)
        hashes = [bytes.fromhex(e["hash"]) for e in await chain(http, tenant, second_cp["chain_seq"])]
        assert merkle.root(hashes[:second.size]) == second.root
        response = await evidence(http, "inclusion", tenant, chain_seq=first_cp["chain_seq"])
        got = response.json()
        assert (response.status_code, got["tree_size"], got["checkpoint"]["size"]) == (200, second.size, second.size)
        merkle.check_inclusion(merkle.leaf_hash(hashes[first_cp["chain_seq"] - 1]), first_cp["chain_seq"] - 1,
                               second.size, [bytes.fromhex(h) for h in got["proof"]], second.root)

        response = await evidence(http, "consistency", tenant, old_size=first.size, new_size=second.size)
        got = response.json()
        assert (response.status_code, got["old_root"], got["new_root"]) == (200, first.root.hex(), second.root.hex())
        merkle.check_consistency(first.size, second.size, first.root, second.root,
                                 [bytes.fromhex(h) for h in got["proof"]])

        keys = (await evidence(http, "keys", tenant, "admin", min_seq=second_cp["chain_seq"])).json()["items"]
        assert [(k["key"], k["name"], k["first_size"]) for k in keys] == \
            [(first_cp["key"], first_cp["origin"], first.size)]
        assert keys[0]["checkpoints"] >= 2 and keys[0]["last_size"] >= second.size


async def test_evidence_is_the_tenants_own_and_bad_input_is_refused(api):
    mine, other = unique("ev-"), unique("ev-")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        run = (await ok(http, mine, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
        await ok(http, mine, {"type": "StartRun", "run_id": run})
        await steps(http, mine, run, 3)
        cp = await checkpoint_beyond(http, mine, 0)
        seq = (await ok(http, other, {"type": "RequestRun", "agent_id": "bot"}))["events"][-1]["chain_seq"]

        # the other tenant has no checkpoint: my chain_seqs answer there as ones that do not exist
        for params in ({"chain_seq": 1}, {"chain_seq": cp["size"]}, {"chain_seq": 10 ** 9}):
            response = await evidence(http, "inclusion", other, min_seq=seq, **params)
            assert (response.status_code, response.json()["code"]) == (404, "no_checkpoint")
        assert (await evidence(http, "keys", other)).json() == {"items": []}

        # beyond my latest checkpoint, an event of mine not yet signed answers like one that does not exist
        latest = (await evidence(http, "checkpoint", mine)).json()["size"]
        pending = await evidence(http, "inclusion", mine, chain_seq=latest + 1)
        nowhere = await evidence(http, "inclusion", mine, chain_seq=10 ** 9)
        reason = nowhere.json()["reason"].replace(str(10 ** 9), str(latest + 1), 1)
        assert pending.json() == {**nowhere.json(), "reason": reason}
        assert (pending.status_code, pending.json()["code"], pending.json()["details"]) == \
            (404, "not_checkpointed", {"latest_size": latest})
        for path, params, status, code in (
                ("inclusion", {"chain_seq": 0}, 400, "invalid_chain_seq"),
                ("inclusion", {"chain_seq": 2, "size": 1}, 400, "invalid_range"),
                ("consistency", {"old_size": cp["size"], "new_size": 1}, 400, "invalid_range"),
                ("consistency", {"old_size": 1, "new_size": 10 ** 9}, 404, "not_checkpointed"),
                ("checkpoint", {"size": 0}, 400, "invalid_size")):
            response = await evidence(http, path, mine, **params)
            assert (response.status_code, response.json()["code"]) == (status, code), response.text
        assert (await evidence(http, "checkpoint", mine, "operator")).status_code == 403
