"""Each read model's fold, on its real store, turns one small sealed chain into exactly the rows written here.

The rebuild-equals-incremental tests run the same fold on both sides, so a wrong fold passes them;
these pin what the rows must be. The chain comes from real commands through the pure domain
(tests/unit/harness.py), then its event ids, command ids and occurred_at are restamped and the
chain resealed, so that every value below is a literal. Each fold is applied two ways: the whole
chain in one poll, and one poll per event by a fresh writer each time (as across restarts, so a
fold that needs an earlier event must find it in its store, not in memory).

The tenant stores no content (the default, metadata-only), so every content field of the chain is
the withheld marker: an object in the jsonb `labels`, its compact JSON text in a text column.
"""
import json
from datetime import date, datetime, timedelta, timezone
from uuid import UUID

import pytest
from psycopg.rows import dict_row

from infra.adapters.clickhouse import ChdbClickHouse
from infra.adapters.postgres import open_pool
from projectors.approvals import ApprovalsProjection
from projectors.audit import AuditProjection
from projectors.base import Batch
from projectors.cost import CostProjection
from projectors.runs import RunsProjection
from schemas.chain import ChainVerdict, verify_chain
from queries.discovery import envelope_of
from schemas.envelope import GENESIS_HASH, compute_hash, seal
from tests.support import make_settings
from tests.unit.harness import ADMIN, OPERATOR, Harness, approver, envelope

TENANT = "fold-tenant"
RUN = "0190a000-0000-7000-8000-000000000001"
STEP = "0190a000-0000-7000-8000-000000000002"
CALL = "0190a000-0000-7000-8000-000000000003"
APPROVAL = "0190a000-0000-7000-8000-000000000004"
COST = "0190a000-0000-7000-8000-000000000005"
BUDGET = "a7136c51-eed5-5a63-b9a8-f22e0299f7df"  # uuid5 of fold-tenant's project p1 (domain/budget.py)
POLICY_BOOK = "4d640584-89be-5c4a-afbc-f3a5d63b2a62"  # uuid5 of fold-tenant's policy book (domain/policies.py)
POLICIES = '@id("risky-shell") @decision("REQUIRE_APPROVAL") @approvals("1") @reason("risky")\n' \
           'permit(principal, action, resource) when { context.tool == "shell" };'
REASON = "approval required by risky-shell: risky"  # the evaluated decision's reason, runledger's text in clear
UTC = timezone.utc
WITHHELD = {"withheld": "metadata-only"}  # what each content field of the chain records (domain/content.py)
WITHHELD_TEXT = '{"withheld":"metadata-only"}'  # ... and what a text column keeps of it

# Command n is decided at 12:00:n; its events are recorded (and, restamped, occurred) then.
COMMANDS = [
    ({"type": "SetBudget", "project": "p1", "period": "month", "limit_micros": 50_000, "currency": "USD"}, ADMIN),
    (envelope(POLICIES, "3.0.0", "pol-1"), ADMIN),
    ({"type": "ActivatePolicy", "policy_id": "pol-1", "version": "3.0.0"}, ADMIN),
    ({"type": "RequestRun", "run_id": RUN, "agent_id": "alpha", "project": "p1", "labels": {"env": "ci"}}, OPERATOR),
    ({"type": "StartRun", "run_id": RUN}, OPERATOR),
    ({"type": "StartStep", "run_id": RUN, "step_id": STEP, "kind": "tool", "name": "fetch"}, OPERATOR),
    ({"type": "RequestToolCall", "tool_call_id": CALL, "run_id": RUN, "step_id": STEP, "tool": "shell",
      "risk_tier": "high", "params_digest": "a" * 64}, OPERATOR),  # decided REQUIRE_APPROVAL by pol-1@3.0.0
    ({"type": "RequestApproval", "approval_id": APPROVAL, "run_id": RUN, "tool_call_id": CALL, "action": "run shell",
      "risk_tier": "high", "required_approvals": 1, "expires_in_seconds": 600}, OPERATOR),
    ({"type": "GrantApproval", "approval_id": APPROVAL, "reason": "looks fine"}, approver("ann")),
    ({"type": "CompleteToolCall", "tool_call_id": CALL, "result_digest": "b" * 64}, OPERATOR),
    ({"type": "FinishStep", "run_id": RUN, "step_id": STEP, "outcome": "succeeded"}, OPERATOR),
    ({"type": "RecordCost", "cost_id": COST, "run_id": RUN, "provider": "anthropic", "model": "opus",
      "tokens_in": 1200, "tokens_out": 300, "amount_micros": 4500, "currency": "USD"}, OPERATOR),
    ({"type": "CompleteRun", "run_id": RUN}, OPERATOR),
]

# chain_seq, type, (aggregate_type, aggregate_id), aggregate_version, command n
CHAIN = [
    (1, "budget.opened", ("budget", BUDGET), 1, 1),
    (2, "budget.limit_set", ("budget", BUDGET), 2, 1),
    (3, "policy.opened", ("policy", POLICY_BOOK), 1, 2),
    (4, "policy.published", ("policy", POLICY_BOOK), 2, 2),
    (5, "policy.activated", ("policy", POLICY_BOOK), 3, 3),
    (6, "run.requested", ("run", RUN), 1, 4),
    (7, "run.started", ("run", RUN), 2, 5),
    (8, "run.step_started", ("run", RUN), 3, 6),
    (9, "tool_call.requested", ("tool_call", CALL), 1, 7),
    (10, "tool_call.policy_decided", ("tool_call", CALL), 2, 7),
    (11, "approval.requested", ("approval", APPROVAL), 1, 8),
    (12, "run.waiting_for_approval", ("run", RUN), 4, 8),
    (13, "approval.vote_recorded", ("approval", APPROVAL), 2, 9),
    (14, "approval.granted", ("approval", APPROVAL), 3, 9),
    (15, "tool_call.approved", ("tool_call", CALL), 3, 9),
    (16, "run.approval_resolved", ("run", RUN), 5, 9),
    (17, "tool_call.completed", ("tool_call", CALL), 4, 10),
    (18, "run.step_finished", ("run", RUN), 6, 11),
    (19, "budget.cost_recorded", ("budget", BUDGET), 3, 12),
    (20, "run.succeeded", ("run", RUN), 7, 13),
]
LAST_RECORDED = "2026-11-22T12:00:13.000000Z"


def at(second: int) -> datetime:
    return datetime(2026, 11, 22, 12, 0, tzinfo=UTC) + timedelta(seconds=second)


def event_id(seq: int) -> str:
    return f"0190b000-0000-7000-8000-{seq:012d}"


def command_id(n: int) -> str:
    return f"0190c000-0000-7000-8000-{n:012d}"


KEYED = {5: "retry-5"}  # the commands that carried an Idempotency-Key: their events record it


def sealed_chain() -> list[dict]:
    """The commands through the pure domain, restamped with literal ids and times, resealed."""
    harness, numbers = Harness(TENANT), {}
    for body, actor in COMMANDS:
        harness.advance(1)
        harness.ok(body, actor)
    chain, prev = [], GENESIS_HASH
    for env in harness.log:
        n = numbers.setdefault(env["command_id"], len(numbers) + 1)
        env = seal({**{k: v for k, v in env.items() if k != "hash"}, "event_id": event_id(env["chain_seq"]),
                    "prev_hash": prev, "occurred_at": env["recorded_at"], "command_id": command_id(n),
                    "causation_id": command_id(n), "correlation_id": command_id(n),
                    **({"idempotency_key": KEYED[n]} if n in KEYED else {})})
        chain.append(env)
        prev = env["hash"]
    return chain


@pytest.fixture(scope="module")
def chain() -> list[dict]:
    envelopes = sealed_chain()
    assert [(e["chain_seq"], e["type"], (e["aggregate_type"], e["aggregate_id"]), e["aggregate_version"])
            for e in envelopes] == [row[:4] for row in CHAIN]
    assert [e["recorded_at"] for e in envelopes] == [f"2026-11-22T12:00:{n:02d}.000000Z" for *_, n in CHAIN]
    assert verify_chain(TENANT, envelopes) == ChainVerdict(True, 20, envelopes[-1]["hash"])
    return envelopes


POLLS = ["one poll", "a poll per event, each by a fresh writer"]


async def fold(open_writer, chain: list[dict], polls: str):
    """Apply the chain as one poll, or as one poll per event with a new writer each time; return the last writer."""
    if polls == POLLS[0]:
        writer = await open_writer()
        await writer.apply([Batch(0, chain, len(chain))])
        return writer
    for offset, env in enumerate(chain):
        writer = await open_writer()
        await writer.apply([Batch(0, [env], offset + 1)])
    return writer


# -- PostgreSQL ------------------------------------------------------------------------------------

@pytest.fixture
async def pool():
    pg = await open_pool(make_settings(), max_size=2)
    try:
        yield pg
    finally:
        await pg.close()


async def pg_rows(pool, sql: str) -> list[dict]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql)
        return await cur.fetchall()


async def pg_bookkeeping(pool, schema: str) -> dict[str, list[dict]]:
    return {"positions": await pg_rows(pool, f"SELECT partition, next_offset, last_recorded_at FROM {schema}.positions"),
            "heads": await pg_rows(pool, f"SELECT * FROM {schema}.heads"),
            "status": await pg_rows(pool, f"SELECT * FROM {schema}.status"),
            "held": await pg_rows(pool, f"SELECT * FROM {schema}.held")}


def pg_bookkeeping_after(chain: list[dict]) -> dict[str, list[dict]]:
    return {"positions": [{"partition": 0, "next_offset": 20, "last_recorded_at": LAST_RECORDED}],
            "heads": [{"tenant_id": TENANT, "chain_seq": 20, "hash": chain[-1]["hash"]}],
            "status": [], "held": []}


@pytest.mark.parametrize("polls", POLLS)
async def test_the_runs_fold_gives_exactly_these_rows(pool, chain, polls):
    # Given the chain, When the runs projection folds it
    prefix = make_settings().topic_prefix
    runs = await fold(lambda: RunsProjection(pool, prefix).open(), chain, polls)

    # Then the run went requested → running → waiting → running → succeeded, with one step, one call, one cost
    s = runs.schema
    assert await pg_rows(pool, f"SELECT * FROM {s}.runs") == [{
        "tenant_id": TENANT, "run_id": UUID(RUN), "agent_id": "alpha", "project": "p1", "state": "succeeded",
        "attempt": 1, "budget_micros": None, "labels": WITHHELD, "waiting_on": [], "error": None,
        "requested_at": at(4), "started_at": at(5), "ended_at": at(13), "updated_at": at(13),
        "version": 7, "last_chain_seq": 20, "step_count": 1, "tool_call_count": 1,
        "cost_micros": 4500, "tokens_in": 1200, "tokens_out": 300, "deadline_at": None}]
    assert await pg_rows(pool, f"SELECT * FROM {s}.steps") == [{
        "tenant_id": TENANT, "step_id": UUID(STEP), "run_id": UUID(RUN), "kind": "tool", "name": "fetch",
        "attempt": 1, "outcome": "succeeded", "error": None, "started_at": at(6), "finished_at": at(11)}]
    assert await pg_rows(pool, f"SELECT * FROM {s}.tool_calls") == [{
        "tenant_id": TENANT, "tool_call_id": UUID(CALL), "run_id": UUID(RUN), "step_id": UUID(STEP),
        "tool": "shell", "risk_tier": "high", "params_digest": "a" * 64, "state": "completed",
        "decision": "REQUIRE_APPROVAL", "policy_id": "pol-1", "policy_version": "3.0.0", "decision_reason": REASON,
        "approval_id": UUID(APPROVAL), "result_digest": "b" * 64, "error": None,
        "requested_at": at(7), "decided_at": at(7), "finished_at": at(10)}]
    assert await pg_bookkeeping(pool, s) == pg_bookkeeping_after(chain)


@pytest.mark.parametrize("polls", POLLS)
async def test_the_approvals_fold_gives_exactly_these_rows(pool, chain, polls):
    # Given the chain, When the approvals projection folds it
    prefix = make_settings().topic_prefix
    approvals = await fold(lambda: ApprovalsProjection(pool, prefix).open(), chain, polls)

    # Then one approval, granted by ann's one vote (her reason is the vote's, the grant has none)
    s = approvals.schema
    assert await pg_rows(pool, f"SELECT * FROM {s}.approvals") == [{
        "tenant_id": TENANT, "approval_id": UUID(APPROVAL), "run_id": UUID(RUN), "tool_call_id": UUID(CALL),
        "action": WITHHELD_TEXT, "risk_tier": "high", "required_role": "approver", "required_approvals": 1,
        "requested_by": "agent-1", "requested_at": at(8), "expires_at": at(8 + 600), "state": "granted",
        "approvers": ["ann"], "decided_by": "ann", "decision_reason": None, "decided_at": at(9),
        "last_chain_seq": 14}]
    assert await pg_rows(pool, f"SELECT * FROM {s}.approval_votes") == [{
        "tenant_id": TENANT, "approval_id": UUID(APPROVAL), "approver": "ann", "reason": WITHHELD_TEXT,
        "voted_at": at(9), "chain_seq": 13}]
    assert await pg_bookkeeping(pool, s) == pg_bookkeeping_after(chain)


# -- ClickHouse (chdb) -----------------------------------------------------------------------------

@pytest.fixture
def ch(tmp_path):
    """chdb on a directory of this test's own; one per process at a time, so closed before the next."""
    engine = ChdbClickHouse(str(tmp_path / "chdb"))
    try:
        yield engine
    finally:
        engine.close()


async def ch_bookkeeping(projection) -> dict:
    return {"positions": {p: (pos.next_offset, pos.last_recorded_at) for p, pos in (await projection.positions()).items()},
            "head": await projection.head(TENANT), "holds": await projection.holds(),
            "failure": await projection.failure()}


def ch_bookkeeping_after(chain: list[dict]) -> dict:
    return {"positions": {0: (20, LAST_RECORDED)}, "head": (20, chain[-1]["hash"]), "holds": {}, "failure": None}


AGENT, ROOT, ANN = ("agent-1", ["operator"]), ("root", ["admin"]), ("ann", ["approver"])
# chain_seq → actor, run_id, tool_call_id, approval_id, tool, decision, policy_id, policy_version
AUDITED = {
    1: (ROOT, None, None, None, None, None, None, None),
    2: (ROOT, None, None, None, None, None, None, None),
    3: (ROOT, None, None, None, None, None, None, None),
    4: (ROOT, None, None, None, None, None, "pol-1", None),  # its payload names the version `version`
    5: (ROOT, None, None, None, None, None, "pol-1", None),
    6: (AGENT, RUN, None, None, None, None, None, None),
    7: (AGENT, RUN, None, None, None, None, None, None),
    8: (AGENT, RUN, None, None, None, None, None, None),
    9: (AGENT, RUN, CALL, None, "shell", None, None, None),
    10: (AGENT, RUN, CALL, None, "shell", "REQUIRE_APPROVAL", "pol-1", "3.0.0"),  # evaluated in RequestToolCall
    11: (AGENT, RUN, CALL, APPROVAL, None, None, None, None),
    12: (AGENT, RUN, None, APPROVAL, None, None, None, None),
    13: (ANN, RUN, None, APPROVAL, None, None, None, None),
    14: (ANN, RUN, None, APPROVAL, None, None, None, None),
    15: (ANN, RUN, CALL, APPROVAL, "shell", None, None, None),
    16: (ANN, RUN, None, APPROVAL, None, None, None, None),
    17: (AGENT, RUN, CALL, None, "shell", None, None, None),
    18: (AGENT, RUN, None, None, None, None, None, None),
    19: (AGENT, RUN, None, None, None, None, None, None),
    20: (AGENT, RUN, None, None, None, None, None, None),
}
SCHEMA_V2 = {"tool_call.requested", "tool_call.policy_decided", "run.requested"}  # every other payload is at v1


def audit_row(seq: int, kind: str, aggregate: tuple[str, str], version: int, n: int, env: dict) -> dict:
    """The row expected for one event: the literals above, plus its own hashes and payload (copied, not derived)."""
    (subject, roles), run_id, call, approval, tool, decision, policy_id, policy_version = AUDITED[seq]
    return {"chain_seq": seq, "event_id": event_id(seq), "type": kind, "schema_version": 2 if kind in SCHEMA_V2 else 1,
            "aggregate_type": aggregate[0], "aggregate_id": aggregate[1], "aggregate_version": version,
            "occurred_at": at(n), "recorded_at": at(n), "actor_subject": subject, "actor_roles": roles,
            "command_id": command_id(n), "correlation_id": command_id(n), "run_id": run_id, "tool_call_id": call,
            "approval_id": approval, "tool": tool, "decision": decision, "policy_id": policy_id,
            "policy_version": policy_version, "prev_hash": env["prev_hash"], "hash": env["hash"],
            "payload": env["payload"], "causation_id": command_id(n), "traceparent": None,
            "idempotency_key": KEYED.get(n)}


@pytest.mark.parametrize("polls", POLLS)
async def test_the_audit_fold_gives_exactly_these_rows(ch, chain, polls):
    # Given the chain, When the audit projection folds it
    audit = await fold(lambda: AuditProjection(ch, "folds").open(), chain, polls)

    # Then one row per event, each naming the run, tool call, approval and tool it concerns
    rows = ch.query(f"SELECT * EXCEPT (tenant_id) FROM {audit.db}.events FINAL ORDER BY chain_seq")
    assert [{**row, "payload": json.loads(row["payload"])} for row in rows] == [
        audit_row(*expected, env) for expected, env in zip(CHAIN, chain, strict=True)]
    assert ch.query(f"SELECT DISTINCT tenant_id FROM {audit.db}.events") == [{"tenant_id": TENANT}]
    assert await ch_bookkeeping(audit) == ch_bookkeeping_after(chain)
    # and every row gives back its envelope exactly: its hash recomputes from the row alone
    assert [envelope_of(TENANT, {**row, "payload": json.loads(row["payload"])}) for row in rows] == chain
    assert [compute_hash(envelope_of(TENANT, {**row, "payload": json.loads(row["payload"])})) for row in rows] == [
        row["hash"] for row in rows]


@pytest.mark.parametrize("polls", POLLS)
async def test_the_cost_fold_gives_exactly_these_rows(ch, chain, polls):
    # Given the chain, When the cost projection folds it
    cost = await fold(lambda: CostProjection(ch, "folds").open(), chain, polls)

    # Then the budget's project, its limit, and the one cost entry on that project
    db = cost.db
    assert ch.query(f"SELECT * FROM {db}.budget_projects FINAL") == [
        {"tenant_id": TENANT, "budget_id": BUDGET, "project": "p1"}]
    assert ch.query(f"SELECT * FROM {db}.budgets FINAL") == [
        {"tenant_id": TENANT, "project": "p1", "chain_seq": 2, "period": "month", "limit_micros": 50_000,
         "currency": "USD"}]
    assert ch.query(f"SELECT * FROM {db}.cost_entries FINAL") == [
        {"tenant_id": TENANT, "chain_seq": 19, "cost_id": COST, "project": "p1", "run_id": RUN,
         "provider": "anthropic", "model": "opus", "tokens_in": 1200, "tokens_out": 300, "amount_micros": 4500,
         "currency": "USD", "day": date(2026, 11, 22), "recorded_at": at(12)}]
    assert await ch_bookkeeping(cost) == ch_bookkeeping_after(chain)
