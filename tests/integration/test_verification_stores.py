"""Verifying read models against the chain, on real Kafka, PostgreSQL and chdb.

Two tenants' chains come from the pure domain (tests/unit/harness.py): tenant A has a budget, three runs
with tool calls, approvals and costs, a legal hold on run 3, a signed checkpoint, then an operational and an audit retention
sweep of its runs 1 and 2; tenant B one run. The chains go onto a fresh events topic, and every read model
is folded from it as a rebuild would (projectors/rebuild.py). A verification then finds each model of each
tenant consistent, with every row read; each kind of damage to a store (a row deleted, a byte of a payload
changed, a row added, a derived row dropped, a state changed) is named by model, table and key, and only there.
"""
import json

import pytest
from aiokafka import AIOKafkaProducer

from domain.evidence import CheckpointSigner, checkpoint_command
from domain.retention import Rules
from infra.adapters import kafka
from infra.adapters.clickhouse import ChdbClickHouse
from infra.adapters.postgres import open_pool
from projectors.approvals import ApprovalsProjection
from projectors.audit import COLUMNS, AuditProjection
from projectors.channels import ChannelsProjection
from projectors.cost import CostProjection
from projectors.evidence import EvidenceProjection
from projectors.governance import GovernanceProjection
from projectors.rebuild import replay_into
from projectors.runs import RunsProjection
from projectors.verification_job import NoEvents, verify
from schemas.envelope import compute_hash, encode, iso
from tests.support import make_settings, unique
from tests.unit.harness import ADMIN, Harness

PG = (RunsProjection, ApprovalsProjection, ChannelsProjection, GovernanceProjection, EvidenceProjection)
CH = (AuditProjection, CostProjection)
# store → (table, rows of a tenant) for every table a verification compares
TABLES = {"runs": ("runs", "steps", "tool_calls", "removals"), "approvals": ("approvals", "approval_votes", "removals"),
          "channels": ("channel_events", "channel_heads", "aggregate_runs"),
          "governance": ("legal_holds", "hold_history", "retention_policies", "sweeps", "removals"),
          "evidence": ("leaves", "checkpoints"), "audit": ("events",),
          "cost": ("cost_entries", "budgets", "budget_projects", "removals")}


def tenant_a(tenant: str) -> tuple[list[dict], dict]:
    h = Harness(tenant)
    h.ledger.rules, h.ledger.signer = Rules({"audit": 0, "operational": 0}), CheckpointSigner("local", b"s" * 32)
    h.ok({"type": "SetBudget", "project": "default", "period": "month", "limit_micros": 10**9, "currency": "USD"},
         ADMIN)
    ids = {}
    for n in (1, 2, 3):
        run = h.running_run()
        h.ok({"type": "StartStep", "run_id": run, "kind": "llm", "name": "plan"})
        call = h.tool_call(run, "REQUIRE_APPROVAL")
        approval = h.approval(run, call)
        h.ok({"type": "GrantApproval", "approval_id": approval}, {"subject": "ann", "roles": ["approver"]})
        h.ok({"type": "CompleteToolCall", "tool_call_id": call})
        h.ok({"type": "RecordCost", "run_id": run, "provider": "p", "model": "m", "tokens_in": n, "amount_micros": n,
              "currency": "USD"})
        h.ok({"type": "CompleteRun", "run_id": run})
        ids[n] = {"run": run, "call": call, "approval": approval}
    h.ok({"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "run", "run_id": ids[3]["run"]}},
         ADMIN)
    reply, signed = h.ledger.execute(checkpoint_command(tenant, iso(h.now)), h.now)  # as the processor's timer does
    assert (reply["status"], [e["type"] for e in signed]) == ("accepted", ["checkpoint.opened", "checkpoint.signed"])
    h.log.extend(signed)
    for record_class in ("operational", "audit"):
        h.ok({"type": "SetRetentionPolicy", "record_class": record_class, "days": 0}, ADMIN)
    h.advance(1)
    for record_class in ("operational", "audit"):
        h.ok({"type": "SweepRetention", "record_class": record_class}, ADMIN)
    return h.log, ids


def tenant_b(tenant: str) -> list[dict]:
    h = Harness(tenant)
    h.ok({"type": "CompleteRun", "run_id": h.running_run()})
    return h.log


@pytest.fixture(scope="module")
async def stores(tmp_path_factory):
    settings = make_settings()
    a, b, c = unique("va-"), unique("vb-"), unique("vc-")
    chain_a, ids = tenant_a(a)
    chain_b = tenant_b(b)
    chain_c = tenant_b(c)
    chain_c[2] = {**chain_c[2], "payload": {**chain_c[2]["payload"], "agent_id": "forged"}}  # its hash no longer fits
    assert [e["payload"]["run_ids"] for e in chain_a if e["type"] == "retention.swept"] == [
        [ids[1]["run"], ids[2]["run"]]] * 2
    await kafka.ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for env in chain_a + chain_b + chain_c:
            await producer.send_and_wait(settings.events_topic, encode(env), key=env["tenant_id"].encode())
    finally:
        await producer.stop()
    pool = await open_pool(settings, max_size=6)
    ch = ChdbClickHouse(str(tmp_path_factory.mktemp("chdb")))
    try:
        projections = ([await cls(pool, settings.topic_prefix).open() for cls in PG]
                       + [await cls(ch, settings.topic_prefix).open() for cls in CH])
        for projection in projections:
            await replay_into(settings, projection)
        yield {"settings": settings, "pool": pool, "ch": ch, "projections": {p.name: p for p in projections},
               "a": a, "b": b, "c": c, "chain_a": chain_a, "chain_b": chain_b, "chain_c": chain_c, "ids": ids}
    finally:
        ch.close()
        await pool.close()


async def table_rows(stores, name: str, tenant: str) -> int:
    projection, total = stores["projections"][name], 0
    for table in TABLES[name]:
        if name in ("audit", "cost"):
            total += projection.ch.query(f"SELECT count() AS n FROM {projection.db}.{table} FINAL "
                                         "WHERE tenant_id = {t:String}", {"t": tenant})[0]["n"]
        else:
            async with stores["pool"].connection() as conn:
                total += (await (await conn.execute(f"SELECT count(*) FROM {projection.schema}.{table} "
                                                    "WHERE tenant_id = %s", (tenant,))).fetchone())[0]
    return total


async def verified(stores, tenants: list[str] | None = ...):
    """Verify every model, of tenants A and B unless told which (None: every tenant on the log)."""
    projections = list(stores["projections"].values())
    asked = [stores["a"], stores["b"]] if tenants is ... else tenants
    return {r.tenant_id: r for r in await verify(stores["settings"], stores["pool"], projections, asked, wait_s=0)}


def family_of(chain: list[dict], ids: dict, runs: tuple[int, ...]) -> set[int]:
    members = {ids[n][k] for n in runs for k in ("run", "call", "approval")}
    return {e["chain_seq"] for e in chain if e["aggregate_id"] in members
            or (e["type"] == "budget.cost_recorded" and e["payload"]["run_id"] in {ids[n]["run"] for n in runs})}


async def test_a_consistent_store_verifies_every_row_of_every_model_and_a_sweep_is_no_gap(stores):
    reports = await verified(stores)
    a, chain_a = stores["a"], stores["chain_a"]
    swept = family_of(chain_a, stores["ids"], (1, 2))
    assert len(swept) == 2 * 14  # a family: 6 run events, 4 of its tool call, 3 of its approval, its cost
    for tenant, chain in ((a, chain_a), (stores["b"], stores["chain_b"])):
        report = reports[tenant]
        assert (report.ok, report.chain_size, report.chain_problem) == (True, len(chain), None)
        for name, verdict in report.models.items():
            assert (verdict.missing, verdict.extra, verdict.mismatched, verdict.applied, verdict.stopped_at,
                    verdict.problems) == (0, 0, 0, len(chain), None, []), name
            assert verdict.rows == await table_rows(stores, name, tenant), name
        assert list(report.models) == ["runs", "approvals", "channels", "governance", "evidence", "audit", "cost"]
    # the audit model holds every event of A but those of the swept families; the evidence model a leaf of every
    # one, and its checkpoint
    assert (reports[a].models["audit"].rows, reports[a].models["evidence"].rows) == (
        len(chain_a) - len(swept), len(chain_a) + 1)
    # run 3's run, step and tool call, and a removals row per table the sweep removed runs 1 and 2 from
    assert reports[a].models["runs"].rows == 3 + 3


async def test_an_unknown_tenant_is_refused_like_one_without_events_and_nothing_is_left_behind(stores):
    with pytest.raises(NoEvents, match=r"no events on .*\.events for tenant nobody-here; check the tenant id"):
        await verified(stores, ["nobody-here"])
    await verified(stores, [stores["b"]])
    async with stores["pool"].connection() as conn:
        shadows = await (await conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                            (f"{stores['settings'].topic_prefix.lower()}%_g0",))).fetchall()
    assert shadows == []
    assert stores["ch"].query("SELECT name FROM system.databases WHERE name LIKE '%\\_g0'") == []


async def test_a_tenant_held_at_a_broken_event_is_reported_stopped_there_in_every_model(stores):
    # When every tenant on the log is verified
    reports = await verified(stores, None)

    # Then the tenant whose chain breaks at chain_seq 3 is held there in every model, and says so
    c = stores["c"]
    assert {t: r.ok for t, r in reports.items()} == {stores["a"]: True, stores["b"]: True, c: False}
    report = reports[c]
    assert (report.chain_size, report.chain_problem.startswith("chain_seq 3: partition "),
            report.chain_problem.endswith("does not match the envelope's content (computed "
                                          f"{compute_hash(stores['chain_c'][2])})")) == (2, True, True)
    for name, verdict in report.models.items():
        assert (verdict.applied, verdict.stopped_at, verdict.missing, verdict.extra, verdict.mismatched,
                [(p.kind, p.table, p.key) for p in verdict.problems]) == (
            2, 3, 0, 0, 0, [("held", "held", {"chain_seq": 3})]), name


async def test_each_kind_of_damage_is_named_where_it_is_and_nowhere_else(stores):
    a, chain, ids, p = stores["a"], stores["chain_a"], stores["ids"], stores["projections"]
    kept = sorted(set(range(1, len(chain) + 1)) - family_of(chain, ids, (1, 2)))
    gone, changed, copied = kept[2], kept[3], kept[4]
    audit, cost = p["audit"], p["cost"]
    # Given an audit row deleted, a byte of another's payload changed, and a row added beyond the chain
    ch = stores["ch"]
    ch.command(f"DELETE FROM {audit.db}.events WHERE tenant_id = {{t:String}} AND chain_seq = {{s:UInt64}} "
               "SETTINGS lightweight_deletes_sync = 2", {"t": a, "s": gone})
    rows = {r["chain_seq"]: r for r in ch.query(f"SELECT {', '.join(COLUMNS)} FROM {audit.db}.events FINAL "
                                                "WHERE tenant_id = {t:String}", {"t": a})}
    payload = rows[changed]["payload"]
    at = next(i for i, ch_ in enumerate(payload) if ch_.islower())  # still JSON, one byte different
    tampered = {**rows[changed], "payload": payload[:at] + payload[at].upper() + payload[at + 1:]}
    extra = {**rows[copied], "chain_seq": len(chain) + 5}
    audit.insert("events", COLUMNS, [tuple(r[c] for c in COLUMNS) for r in (tampered, extra)])
    # and a cost entry deleted, a run's row dropped, an approval's state changed, a leaf deleted, a checkpoint's
    # note and a hold's matter changed and a stored SSE envelope altered, all of tenant A
    cost_seq = next(e["chain_seq"] for e in chain if e["type"] == "budget.cost_recorded"
                    and e["payload"]["run_id"] == ids[3]["run"])
    ch.command(f"DELETE FROM {cost.db}.cost_entries WHERE tenant_id = {{t:String}} AND chain_seq = {{s:UInt64}} "
               "SETTINGS lightweight_deletes_sync = 2", {"t": a, "s": cost_seq})
    hold = next(e["aggregate_id"] for e in chain if e["type"] == "legal_hold.placed")
    signed = next(e["chain_seq"] for e in chain if e["type"] == "checkpoint.signed")
    async with stores["pool"].connection() as conn:
        await conn.execute(f"DELETE FROM {p['runs'].schema}.runs WHERE tenant_id = %s AND run_id = %s",
                           (a, ids[3]["run"]))
        await conn.execute(f"UPDATE {p['approvals'].schema}.approvals SET state = 'denied' WHERE tenant_id = %s "
                           "AND approval_id = %s", (a, ids[3]["approval"]))
        await conn.execute(f"DELETE FROM {p['evidence'].schema}.leaves WHERE tenant_id = %s AND chain_seq = 3", (a,))
        await conn.execute(f"UPDATE {p['evidence'].schema}.checkpoints SET note = note || ' ' WHERE tenant_id = %s",
                           (a,))
        await conn.execute(f"UPDATE {p['governance'].schema}.legal_holds SET matter = 'other' WHERE tenant_id = %s",
                           (a,))
        await conn.execute(f"UPDATE {p['channels'].schema}.channel_events SET envelope = jsonb_set(envelope, "
                           "'{payload,agent_id}', '\"forged\"') WHERE tenant_id = %s AND channel = 'tenant' "
                           "AND chain_seq = %s", (a, kept[0]))

    # When the store is verified
    reports = await verified(stores)

    # Then each is named exactly, with the columns that differ, and tenant B is untouched
    found = {(p.model, p.table, json.dumps(p.key, sort_keys=True), p.kind, p.columns, p.detail)
             for p in reports[a].problems()}
    key = lambda **k: json.dumps(k, sort_keys=True)  # noqa: E731
    assert found == {
        ("audit", "events", key(chain_seq=gone), "missing", (), "the chain has this row; the read model does not"),
        ("audit", "events", key(chain_seq=changed), "mismatched", ("payload",),
         "the row does not re-hash to its hash: it was changed after it was written"),
        ("audit", "events", key(chain_seq=len(chain) + 5), "extra", (), "no event of the chain makes this row"),
        ("cost", "cost_entries", key(tenant_id=a, chain_seq=cost_seq), "missing", (),
         "the chain has this row; the read model does not"),
        ("runs", "runs", key(tenant_id=a, run_id=ids[3]["run"]), "missing", (),
         "the chain has this row; the read model does not"),
        ("approvals", "approvals", key(tenant_id=a, approval_id=ids[3]["approval"]), "mismatched", ("state",),
         "differs from the chain in state"),
        ("evidence", "leaves", key(chain_seq=3), "missing", (), "the chain has this row; the read model does not"),
        ("evidence", "checkpoints", key(chain_seq=signed), "mismatched", ("note",), "differs from the chain in note"),
        ("governance", "legal_holds", key(tenant_id=a, hold_id=hold), "mismatched", ("matter",),
         "differs from the chain in matter"),
        ("channels", "channel_events", key(chain_seq=kept[0], channel="tenant"), "mismatched", ("envelope",),
         "the stored envelope does not re-hash or is not this row's event"),
    }
    counts = {n: (v.missing, v.extra, v.mismatched, v.ok) for n, v in reports[a].models.items()}
    assert counts == {"runs": (1, 0, 0, False), "approvals": (0, 0, 1, False), "channels": (0, 0, 1, False),
                      "governance": (0, 0, 1, False), "evidence": (1, 0, 1, False), "audit": (1, 1, 1, False),
                      "cost": (1, 0, 0, False)}
    assert (reports[stores["b"]].ok, reports[stores["b"]].problems()) == (True, [])
