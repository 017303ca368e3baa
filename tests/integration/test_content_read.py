"""Sealed content, folded into the real stores, reads as its plaintext until its subject is shredded.

A tenant's chain is built by hand with content fields sealed through a PostgresKeyStore (as the
processor seals them: each with the data key of the event's actor), next to a run from before
content was sealed (plain values) and one whose fields are withheld. The runs and approvals
projections fold it into PostgreSQL and the audit projection into chdb; ReadModels and Discovery
read it back through the same key store, before and after `shred`.
"""
import uuid

import pytest

from infra.adapters.clickhouse import ChdbClickHouse
from infra.adapters.keys import SHREDDED, Content
from infra.adapters.keys.postgres import PostgresKeyStore
from infra.adapters.keys.stored import NO_KEK, NOT_STORED, column_text
from infra.adapters.postgres import open_pool
from projectors.approvals import ApprovalsProjection
from projectors.audit import AuditProjection
from projectors.base import Batch
from projectors.runs import RunsProjection
from queries.discovery import Discovery
from queries.readmodels import ReadModels
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import GENESIS_HASH, compute_hash, seal
from tests.support import make_settings, unique
from tests.unit.test_envelope import unsealed

KEKS = {"kek-1": bytes(range(32))}
R1, R2, R3, S1, S2, C1, A1 = (str(uuid.uuid4()) for _ in range(7))
ROLES = {"agent-1": ["operator"], "policy-engine": ["policy"], "ann": ["approver"]}
METADATA_ONLY, SUBJECT_SHREDDED = {"withheld": "metadata-only"}, {"withheld": "subject shredded"}
PLAIN = {"R1 labels": '{"env":"ci"}', "R1 step error": "disk full", "C1 reason": "too risky",
         "A1 action": "deploy to prod", "A1 vote": "fine by me", "A1 denial": "not today", "R1 error": "gave up"}
AUTHORS = {"R1 labels": "agent-1", "R1 step error": "agent-1", "C1 reason": "policy-engine", "A1 action": "agent-1",
           "A1 vote": "ann", "A1 denial": "ann", "R1 error": "agent-1"}


def events(s: dict[str, dict]) -> list[tuple]:
    """(type, aggregate, version, actor, payload) of the chain, with s the sealed fields by name."""
    run = {"project": "p1", "budget_micros": None}
    return [
        ("run.requested", ("run", R1), 1, "agent-1", {**run, "agent_id": "alpha", "labels": s["R1 labels"]}),
        ("run.started", ("run", R1), 2, "agent-1", {}),
        ("run.step_started", ("run", R1), 3, "agent-1", {"step_id": S1, "kind": "tool", "name": "fetch", "attempt": 1}),
        ("tool_call.requested", ("tool_call", C1), 1, "agent-1",
         {"run_id": R1, "step_id": S1, "tool": "shell", "risk_tier": "high", "params_digest": "a" * 64}),
        ("tool_call.policy_decided", ("tool_call", C1), 2, "policy-engine",
         {"decision": "DENY", "policy_id": "pol-1", "policy_version": "v3", "reason": s["C1 reason"]}),
        ("tool_call.blocked", ("tool_call", C1), 3, "agent-1", {"reason": s["C1 reason"]}),  # the policy's, copied
        ("run.step_finished", ("run", R1), 4, "agent-1",
         {"step_id": S1, "outcome": "failed", "error": s["R1 step error"]}),
        ("approval.requested", ("approval", A1), 1, "agent-1",
         {"run_id": R1, "tool_call_id": None, "action": s["A1 action"], "risk_tier": "high",
          "required_role": "approver", "required_approvals": 1, "requested_by": "agent-1",
          "expires_at": "2026-11-22T11:00:00.000000Z"}),
        ("approval.vote_recorded", ("approval", A1), 2, "ann", {"approver": "ann", "reason": s["A1 vote"]}),
        ("approval.denied", ("approval", A1), 3, "ann", {"approver": "ann", "reason": s["A1 denial"]}),
        ("run.failed", ("run", R1), 5, "agent-1", {"error": s["R1 error"]}),
        # a run from before content was sealed, and one whose content was withheld
        ("run.requested", ("run", R2), 1, "agent-1", {**run, "agent_id": "beta", "labels": {"team": "blue"}}),
        ("run.step_started", ("run", R2), 2, "agent-1", {"step_id": S2, "kind": "llm", "name": "plan", "attempt": 1}),
        ("run.step_finished", ("run", R2), 3, "agent-1", {"step_id": S2, "outcome": "succeeded", "error": None}),
        ("run.cancelled", ("run", R2), 4, "agent-1", {"reason": "legacy plain reason"}),
        ("run.requested", ("run", R3), 1, "agent-1", {**run, "agent_id": "gamma", "labels": METADATA_ONLY}),
        ("run.cancelled", ("run", R3), 2, "agent-1", {"reason": SUBJECT_SHREDDED}),
    ]


def chain_of(tenant: str, sealed: dict[str, dict]) -> list[dict]:
    envelopes, prev = [], GENESIS_HASH
    for seq, (kind, (aggregate_type, aggregate_id), version, subject, payload) in enumerate(events(sealed), 1):
        env = seal({**unsealed(seq, prev), "tenant_id": tenant, "type": kind, "aggregate_type": aggregate_type,
                    "aggregate_id": aggregate_id, "aggregate_version": version, "payload": payload,
                    "actor": {"subject": subject, "roles": ROLES[subject]},
                    "occurred_at": f"2026-11-22T10:00:{seq:02d}.000000Z"})
        envelopes.append(env)
        prev = env["hash"]
    return envelopes


@pytest.fixture
async def world(tmp_path):
    """A tenant's chain with sealed content, folded into runs, approvals (PostgreSQL) and audit (chdb)."""
    settings, tenant, table = make_settings(), unique("tenant-"), f"content_keys_{uuid.uuid4().hex[:12]}"
    pool = await open_pool(settings, max_size=4)
    ch = ChdbClickHouse(str(tmp_path / "chdb"))
    try:
        store = await PostgresKeyStore(pool, KEKS, "kek-1", table=table).open()
        content = Content(store)
        sealed = {name: await content.seal(tenant, AUTHORS[name], text) for name, text in PLAIN.items()}
        chain = chain_of(tenant, sealed)
        assert verify_chain(tenant, chain) == ChainVerdict(True, 17, chain[-1]["hash"])
        prefix = settings.topic_prefix
        audit = AuditProjection(ch, prefix)
        for projection in (RunsProjection(pool, prefix), ApprovalsProjection(pool, prefix), audit):
            await (await projection.open()).apply([Batch(0, chain, len(chain))])
        yield {"tenant": tenant, "store": store, "sealed": sealed, "chain": chain,
               "models": ReadModels(pool, prefix, content), "discovery": Discovery(audit, audit, content),
               "keyless": (ReadModels(pool, prefix), Discovery(audit, audit))}
    finally:
        ch.close()
        async with pool.connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS public.{table}")
        await pool.close()


async def shown(w: dict) -> dict:
    """What every content field of the tenant reads as, through ReadModels and Discovery."""
    models, tenant = w["models"], w["tenant"]
    r1, r2, r3 = [await models.get_run(tenant, run) for run in (R1, R2, R3)]
    approval = await models.get_approval(tenant, A1)
    listed = (await models.list_runs(tenant, None, None, None, None, None, 10))["items"]
    audit = (await w["discovery"].search(tenant, {}, None, None, None, 100))["items"]
    return {"R1": (r1["labels"], r1["error"], [s["error"] for s in r1["steps"]],
                   [(c["decision_reason"], c["error"]) for c in r1["tool_calls"]]),
            "R2": (r2["labels"], r2["error"], [s["error"] for s in r2["steps"]]), "R3": (r3["labels"], r3["error"]),
            "A1": (approval["action"], approval["decision_reason"],
                   [(v["approver"], v["reason"]) for v in approval["votes"]]),
            "listed": [(str(r["run_id"]), r["labels"], r["error"]) for r in listed],
            "audit": {item["chain_seq"]: item["content"] for item in audit if item["content"]}}


LEGACY_AND_WITHHELD = {"R2": ({"team": "blue"}, "legacy plain reason", [None]), "R3": (NOT_STORED, SHREDDED)}


async def test_sealed_content_reads_as_plaintext_then_shredded_and_never_stale(world):
    w = world
    # Given the folded chain, When it is read while every key exists, Then every field is its plaintext
    assert await shown(w) == {
        "R1": ({"env": "ci"}, "gave up", ["disk full"], [("too risky", "too risky")]), **LEGACY_AND_WITHHELD,
        "A1": ("deploy to prod", "not today", [("ann", "fine by me")]),
        "listed": [(R3, NOT_STORED, SHREDDED), (R2, {"team": "blue"}, "legacy plain reason"),
                   (R1, {"env": "ci"}, "gave up")],
        "audit": {1: {"labels": {"env": "ci"}}, 5: {"reason": "too risky"}, 6: {"reason": "too risky"},
                  7: {"error": "disk full"}, 8: {"action": "deploy to prod"}, 9: {"reason": "fine by me"},
                  10: {"reason": "not today"}, 11: {"error": "gave up"}, 16: {"labels": NOT_STORED},
                  17: {"reason": SHREDDED}}}

    # When agent-1 is shredded (and then gets a new key, as the processor would mint on its next seal)
    old = await w["store"].subject_keys(w["tenant"], "agent-1")
    assert (await w["store"].shred(w["tenant"], "agent-1"), len(old)) == (old, 1)
    assert (await w["store"].key_for(w["tenant"], "agent-1"))[0] != old[0]

    # Then what agent-1 wrote reads [shredded], the policy engine's and ann's still read, legacy is unchanged
    after = {"R1": (SHREDDED, SHREDDED, [SHREDDED], [("too risky", "too risky")]), **LEGACY_AND_WITHHELD,
             "A1": (SHREDDED, "not today", [("ann", "fine by me")]),
             "listed": [(R3, NOT_STORED, SHREDDED), (R2, {"team": "blue"}, "legacy plain reason"),
                        (R1, SHREDDED, SHREDDED)],
             "audit": {1: {"labels": SHREDDED}, 5: {"reason": "too risky"}, 6: {"reason": "too risky"},
                       7: {"error": SHREDDED}, 8: {"action": SHREDDED}, 9: {"reason": "fine by me"},
                       10: {"reason": "not today"}, 11: {"error": SHREDDED}, 16: {"labels": NOT_STORED},
                       17: {"reason": SHREDDED}}}
    assert await shown(w) == after

    # And shredding ann leaves nothing of hers readable either
    await w["store"].shred(w["tenant"], "ann")
    final = await shown(w)
    assert (final["A1"], final["audit"][9], final["audit"][10]) == (
        (SHREDDED, SHREDDED, [("ann", SHREDDED)]), {"reason": SHREDDED}, {"reason": SHREDDED})


async def test_the_stores_keep_sealed_fields_as_recorded_and_audit_rows_still_rehash(world):
    w, s = world, world["sealed"]
    models, tenant = w["models"], w["tenant"]
    raw = {"runs": await models.fetch("runs", "SELECT run_id, labels, error FROM {s}.runs WHERE tenant_id = %s "
                                              "ORDER BY agent_id", (tenant,)),
           "tool_calls": await models.fetch("runs", "SELECT decision_reason, error FROM {s}.tool_calls "
                                                    "WHERE tenant_id = %s", (tenant,)),
           "approvals": await models.fetch("approvals", "SELECT action, decision_reason FROM {s}.approvals "
                                                        "WHERE tenant_id = %s", (tenant,)),
           "votes": await models.fetch("approvals", "SELECT reason FROM {s}.approval_votes WHERE tenant_id = %s",
                                       (tenant,))}
    assert raw == {
        "runs": [{"run_id": uuid.UUID(R1), "labels": s["R1 labels"], "error": column_text(s["R1 error"])},
                 {"run_id": uuid.UUID(R2), "labels": {"team": "blue"}, "error": "legacy plain reason"},
                 {"run_id": uuid.UUID(R3), "labels": METADATA_ONLY, "error": '{"withheld":"subject shredded"}'}],
        "tool_calls": [{"decision_reason": column_text(s["C1 reason"]), "error": column_text(s["C1 reason"])}],
        "approvals": [{"action": column_text(s["A1 action"]), "decision_reason": column_text(s["A1 denial"])}],
        "votes": [{"reason": column_text(s["A1 vote"])}]}
    assert [v.startswith('{"alg":"A256GCM","ct":"') for v in (raw["votes"][0]["reason"], raw["runs"][0]["error"])] \
        == [True, True]
    items = (await w["discovery"].search(tenant, {}, None, None, None, 100))["items"]
    by_seq = {env["chain_seq"]: env for env in w["chain"]}
    assert [(i["payload"], compute_hash({**by_seq[i["chain_seq"]], "payload": i["payload"]}), i["hash"])
            for i in items] == [(by_seq[i["chain_seq"]]["payload"], by_seq[i["chain_seq"]]["hash"],
                                 by_seq[i["chain_seq"]]["hash"]) for i in items]
    assert len(items) == 17


async def test_a_process_without_a_kek_shows_sealed_fields_as_unreadable_and_the_rest_as_ever(world):
    models, discovery = world["keyless"]
    r1, r2 = await models.get_run(world["tenant"], R1), await models.get_run(world["tenant"], R2)
    approval = await models.get_approval(world["tenant"], A1)
    audit = (await discovery.search(world["tenant"], {"type": "approval.denied"}, None, None, None, 10))["items"]
    assert ((r1["labels"], r1["error"], r1["steps"][0]["error"]), (r2["labels"], r2["error"]),
            (approval["action"], approval["votes"][0]["reason"]), [i["content"] for i in audit]) == (
        (NO_KEK, NO_KEK, NO_KEK), ({"team": "blue"}, "legacy plain reason"), (NO_KEK, NO_KEK), [{"reason": NO_KEK}])
