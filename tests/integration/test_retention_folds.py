"""Retention sweeps folded by every read model they govern, on real PostgreSQL and chdb.

Two tenants run the same story through the pure domain (tests/unit/harness.py, no retention floor):
a budget and an unattributed cost, a finished run 1 (two steps, two tool calls, an approval with two
votes, a cost), a run 2 with the same and a legal hold on it, then a sweep: tenant A's of the
operational class (runs, approvals, channels), tenant B's of the audit class (audit, cost); each
removes run 1's family only. Each store folds the chain before the sweeps, then the sweeps, and
must then hold exactly what it held before minus the rows of the swept family (counted here by
hand), plus the sweep events' own rows, with a `removals` row per table saying what it removed.
A probe of the sweeps removes nothing, a replayed poll changes nothing, and a fresh rebuild (a poll
per event, or the whole chain in one poll) equals the live model. test_retention_streams.py reads
the swept channels through the streams API's reader.
"""
import json
from dataclasses import dataclass
from datetime import datetime

import pytest
from psycopg.rows import dict_row

from domain.retention import Rules
from infra.adapters.clickhouse import ChdbClickHouse
from infra.adapters.postgres import open_pool
from projectors.approvals import ApprovalsProjection
from projectors.audit import AuditProjection
from projectors.base import Batch
from projectors.channels import ChannelsProjection
from projectors.cost import CostProjection
from projectors.removals import Removal
from projectors.runs import RunsProjection
from schemas.chain import verify_chain
from tests.support import make_settings
from tests.unit.harness import ADMIN, OPERATOR, Harness, approver, envelope

A, B = "ret-a", "ret-b"
SWEEPS = {A: "operational", B: "audit"}
KINDS = ("run", "step1", "step2", "call1", "call2", "approval", "cost")
POLICIES = """
@id("http") permit(principal, action, resource) when { context.tool == "http" };
@id("shell") @decision("REQUIRE_APPROVAL") @approvals("2")
permit(principal, action, resource) when { context.tool == "shell" };
"""


def uid(tenant: str, run: int, kind: str) -> str:
    return f"0190e00{'ab'.index(tenant[-1]) + 1}-0000-7000-8000-{run:06d}{KINDS.index(kind) + 1:06d}"


def family(h: Harness, run: int, finish: bool = True) -> None:
    """A run with two steps, a tool call allowed, one approved by two votes, and a cost."""
    t, ok = h.ledger.tenant_id, step(h)
    i = {kind: uid(t, run, kind) for kind in KINDS}
    ok({"type": "RequestRun", "run_id": i["run"], "agent_id": f"agent-{run}", "project": "p1"})
    ok({"type": "StartRun", "run_id": i["run"]})
    ok({"type": "StartStep", "run_id": i["run"], "step_id": i["step1"], "kind": "llm", "name": "plan"})
    ok({"type": "FinishStep", "run_id": i["run"], "step_id": i["step1"], "outcome": "succeeded"})
    ok({"type": "StartStep", "run_id": i["run"], "step_id": i["step2"], "kind": "tool", "name": "fetch"})
    for call, tool, decision in (("call1", "http", "ALLOW"), ("call2", "shell", "REQUIRE_APPROVAL")):
        h.advance(1)
        reply = h.send({"type": "RequestToolCall", "tool_call_id": i[call], "run_id": i["run"], "step_id": i["step2"],
                        "tool": tool, "risk_tier": "high", "params_digest": "a" * 64})
        assert reply["decision"]["decision"] == decision, reply  # decided by POLICIES
        if decision == "REQUIRE_APPROVAL":
            ok({"type": "RequestApproval", "approval_id": i["approval"], "run_id": i["run"], "tool_call_id": i[call],
                "action": "run shell", "risk_tier": "high", "required_approvals": 2, "expires_in_seconds": 600})
            ok({"type": "GrantApproval", "approval_id": i["approval"], "reason": "fine"}, approver("ann"))
            ok({"type": "GrantApproval", "approval_id": i["approval"], "reason": "fine too"}, approver("bob"))
        ok({"type": "CompleteToolCall", "tool_call_id": i[call], "result_digest": "b" * 64})
    ok({"type": "FinishStep", "run_id": i["run"], "step_id": i["step2"], "outcome": "succeeded"})
    ok({"type": "RecordCost", "cost_id": i["cost"], "run_id": i["run"], "provider": "anthropic", "model": "opus",
        "tokens_in": 100 * run, "tokens_out": 10 * run, "amount_micros": 1000 * run, "currency": "USD"})
    if finish:
        ok({"type": "CompleteRun", "run_id": i["run"]})


def step(h: Harness):
    """Send a command a second after the last one, asserting it is accepted."""
    return lambda body, actor=OPERATOR: (h.advance(1), h.ok(body, actor))[1]


@dataclass
class Story:
    pre: list[dict]     # both tenants' events before their sweeps
    sweeps: list[dict]  # A's operational sweep, B's audit sweep
    post: list[dict]    # what follows: run 2 of A ends, B starts a run 3

    @property
    def chain(self) -> list[dict]:
        return self.pre + self.sweeps + self.post


def tenant_story(tenant: str) -> tuple[list[dict], dict, list[dict]]:
    h, record_class = Harness(tenant), SWEEPS[tenant]
    h.ledger.rules = Rules({"audit": 0, "operational": 0})
    ok = step(h)
    ok({"type": "SetBudget", "project": "p1", "period": "month", "limit_micros": 10**9, "currency": "USD"}, ADMIN)
    ok({"type": "SetRetentionPolicy", "record_class": record_class, "days": 0}, ADMIN)
    ok(envelope(POLICIES, "1.0.0", "pol"), ADMIN)
    ok({"type": "ActivatePolicy", "policy_id": "pol", "version": "1.0.0"}, ADMIN)
    ok({"type": "RecordCost", "project": "p1", "provider": "anthropic", "model": "haiku", "amount_micros": 7,
        "currency": "USD"})
    family(h, 1)
    family(h, 2, finish=tenant == B)
    ok({"type": "PlaceLegalHold", "matter": "Doe v. Acme", "reason": "litigation",
        "scope": {"kind": "run", "run_id": uid(tenant, 2, "run")}}, ADMIN)
    ok({"type": "SweepRetention", "record_class": record_class}, ADMIN)
    pre, sweep = h.log[:-1], h.log[-1]
    if tenant == A:
        ok({"type": "CompleteRun", "run_id": uid(A, 2, "run")})
    else:
        ok({"type": "RequestRun", "run_id": uid(B, 3, "run"), "agent_id": "agent-3", "project": "p1"})
        ok({"type": "StartRun", "run_id": uid(B, 3, "run")})
    assert verify_chain(tenant, h.log).ok
    return pre, sweep, h.log[len(pre) + 1:]


def the_story() -> Story:
    (pre_a, sweep_a, post_a), (pre_b, sweep_b, post_b) = tenant_story(A), tenant_story(B)
    for tenant, sweep in ((A, sweep_a), (B, sweep_b)):
        assert sweep["type"] == "retention.swept" and sweep["payload"]["run_ids"] == [uid(tenant, 1, "run")]
        assert sweep["payload"]["counts"] == {"runs": 1, "events": 21}
    assert sweep_a["payload"]["kept_by_holds"] == {}  # A's run 2 is still running
    assert list(sweep_b["payload"]["kept_by_holds"].values()) == [1]  # B's run 2 ended, but is held
    return Story(pre_a + pre_b, [sweep_a, sweep_b], post_a + post_b)


story = pytest.fixture(scope="module", name="story")(the_story)


def swept_at(story: Story, tenant: str) -> datetime:
    sweep = next(e for e in story.sweeps if e["tenant_id"] == tenant)
    return datetime.fromisoformat(sweep["recorded_at"].replace("Z", "+00:00"))


# -- what each store must lose -------------------------------------------------------------------

def of_run(tenant: str, column: str = "run_id", kind: str = "run"):
    """Rows of `tenant` whose column names run 1's id of that kind (tenant is whose sweep governs the store)."""
    return lambda row: row["tenant_id"] == tenant and str(row[column]) == uid(tenant, 1, kind)


def in_family(env: dict) -> bool:
    """Whether an envelope belongs to tenant A's run 1 (a run, tool call or approval of it, or its cost)."""
    members = {uid(A, 1, kind) for kind in ("run", "call1", "call2", "approval")}
    return env["aggregate_id"] in members or (env["type"] == "budget.cost_recorded"
                                              and env["payload"]["run_id"] == uid(A, 1, "run"))


never = lambda row: False  # noqa: E731

# store → table → (which rows of it belong to the swept family, how many there are)
FAMILY = {
    "runs": {"runs": (of_run(A), 1), "steps": (of_run(A), 2), "tool_calls": (of_run(A), 2)},
    "approvals": {"approvals": (of_run(A), 1), "approval_votes": (of_run(A, "approval_id", "approval"), 2)},
    # run 1's channel has its 20 events (its cost is the budget's), the tenant channel all 21 (cost
    # included), the approvals channel the approval's 4; aggregate_runs its two calls and approval.
    "channels": {"channel_events": (lambda r: r["tenant_id"] == A and (r["channel"] == f"run:{uid(A, 1, 'run')}"
                                                                      or in_family(r["envelope"])), 20 + 21 + 4),
                 "aggregate_runs": (of_run(A), 3), "channel_heads": (never, 0)},
    "audit": {"events": (of_run(B), 21)},
    "cost": {"cost_entries": (of_run(B), 1), "budgets": (never, 0), "budget_projects": (never, 0)},
}
TENANT_OF = {"runs": A, "approvals": A, "channels": A, "audit": B, "cost": B}


def canonical(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


# -- PostgreSQL ------------------------------------------------------------------------------------

@pytest.fixture
async def pool():
    pg = await open_pool(make_settings(), max_size=3)
    try:
        yield pg
    finally:
        await pg.close()


async def pg_rows(pool, sql: str, params: tuple = ()) -> list[dict]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def pg_dump(projection) -> dict[str, list[dict]]:
    tables = list(FAMILY[projection.name]) + ["removals", "heads"]
    dump = {t: canonical(await pg_rows(projection.pool, f"SELECT * FROM {projection.schema}.{t}")) for t in tables}
    dump["positions"] = await pg_rows(projection.pool, f"SELECT partition, next_offset, last_recorded_at "
                                                       f"FROM {projection.schema}.positions")
    return dump


# -- ClickHouse (chdb) -----------------------------------------------------------------------------

@pytest.fixture
def ch(tmp_path):
    engine = ChdbClickHouse(str(tmp_path / "chdb"))
    try:
        yield engine
    finally:
        engine.close()


async def ch_dump(projection) -> dict[str, list[dict]]:
    dump = {t: canonical(projection.ch.query(f"SELECT * FROM {projection.db}.{t} FINAL"))
            for t in list(FAMILY[projection.name]) + ["removals"]}
    dump["heads"] = [await projection.head(t) for t in (A, B)]
    dump["positions"] = {p: (pos.next_offset, pos.last_recorded_at) for p, pos in (await projection.positions()).items()}
    return dump


STORES = {"runs": (RunsProjection, "pg"), "approvals": (ApprovalsProjection, "pg"),
          "channels": (ChannelsProjection, "pg"), "audit": (AuditProjection, "ch"), "cost": (CostProjection, "ch")}


@pytest.fixture(params=list(STORES))
def store(request):
    """(open a writer, dump it) for one store, on its real engine."""
    cls, engine = STORES[request.param]
    if engine == "pg":
        pool, prefix = request.getfixturevalue("pool"), make_settings().topic_prefix
        return (lambda: cls(pool, prefix).open()), pg_dump
    ch = request.getfixturevalue("ch")
    return (lambda: cls(ch, "retention").open()), ch_dump


SWEEP_ROWS = {"audit": "events", "channels": "channel_events"}  # where a sweep event has a row of its own


async def test_a_sweep_removes_exactly_its_family_from_each_store_it_governs(store, story):
    open_writer, dump = store
    live = await open_writer()
    name, tenant = live.name, TENANT_OF[live.name]
    pre, both = len(story.pre), len(story.pre) + len(story.sweeps)
    # Given both tenants' stories folded up to their sweeps
    await live.apply([Batch(0, story.pre, pre)])
    before = await dump(live)

    # When the sweeps are probed (as admission bisects a failing poll), nothing is removed
    await live.probe(story.sweeps)
    assert await dump(live) == before

    # When the sweeps are folded
    await live.apply([Batch(0, story.sweeps, both)])
    after = await dump(live)

    # Then each table lost exactly the swept family's rows, and gained only the sweep events' own rows
    added = {t: [r for r in after[t] if r["type"] == "retention.swept"] for t in [SWEEP_ROWS.get(name)] if t}
    for table, (belongs, count) in FAMILY[name].items():
        gone = [r for r in before[table] if belongs(r)]
        assert len(gone) == count, table
        if table == "channel_heads":
            continue
        assert after[table] == canonical([r for r in before[table] if not belongs(r)] + added.get(table, [])), table
    if name == "audit":  # the two sweep rows, each tenant's: an audit record of an operational sweep too
        assert [(r["tenant_id"], r["chain_seq"], r["run_id"]) for r in added["events"]] == [
            (e["tenant_id"], e["chain_seq"], None) for e in story.sweeps]
    if name == "channels":
        await channels_after_sweep(before, after, added, story)
    if name == "audit":  # what it remembered of run 1's tool calls and approval is forgotten, run 2's is not
        assert {run for run, _ in live.known.values()} == {uid(A, 1, "run"), uid(A, 2, "run"), uid(B, 2, "run")}
    # and the other run, the other tenant and the other class's stores are untouched: the equality above
    seq = next(e for e in story.sweeps if e["tenant_id"] == tenant)["chain_seq"]
    removed = sorted((table, count) for table, (_, count) in FAMILY[name].items() if count)
    assert await live.removals(tenant) == [
        Removal(tenant, seq, SWEEPS[tenant], table, count, swept_at(story, tenant)) for table, count in removed]
    assert await live.removals(({A, B} - {tenant}).pop()) == []
    assert len(after["removals"]) == len(removed)

    # When the sweeps' poll is delivered again (and, in ClickHouse, which is idempotent, the whole chain so far)
    if name != "channels":  # channels appends: a committed poll is never redelivered (its position commits with it)
        await live.apply([Batch(0, story.sweeps, both)])
        assert await dump(live) == after
    if name in ("audit", "cost"):
        await live.apply([Batch(0, story.pre + story.sweeps, both)])
        assert await dump(live) == after

    # Then the rest of the story folds on, and a fresh rebuild equals the live model, however it is polled
    await live.apply([Batch(0, story.post, len(story.chain))])
    final = await dump(live)
    per_event = await live.fresh_generation(2)
    for offset, env in enumerate(story.chain):
        await per_event.apply([Batch(0, [env], offset + 1)])
    assert await dump(per_event) == final
    one_poll = await live.fresh_generation(3)
    await one_poll.apply([Batch(0, story.chain, len(story.chain))])
    assert await dump(one_poll) == final


async def channels_after_sweep(before: dict, after: dict, added: dict, story: Story) -> None:
    """Each tenant channel gained its sweep at the next seq; heads kept counting; run 1's channel is all gone."""
    heads = {(h["tenant_id"], h["channel"]): h for h in before["channel_heads"]}
    assert [(r["tenant_id"], r["channel"], r["seq"], r["envelope"]) for r in added["channel_events"]] == [
        (e["tenant_id"], "tenant", heads[(e["tenant_id"], "tenant")]["seq"] + 1, e) for e in story.sweeps]
    run1 = (A, f"run:{uid(A, 1, 'run')}")
    assert heads[run1]["seq"] == 20
    expected = {**heads, run1: {**heads[run1], "oldest": 21},
                **{(t, "tenant"): {**heads[(t, "tenant")], "seq": heads[(t, "tenant")]["seq"] + 1} for t in (A, B)}}
    assert after["channel_heads"] == canonical(list(expected.values()))
    kept = [r for r in after["channel_events"] if r["tenant_id"] == A and r["channel"] == "tenant"]
    assert {r["type"] for r in kept} >= {"legal_hold.placed", "retention.policy_set", "retention.swept"}
