"""Read the Postgres read models: always the live generation, always one tenant."""
import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from projectors.generations import PostgresGenerations
from infra.adapters.http.errors import Refused
from infra.adapters.keys.port import Content
from queries.content import ContentReader
from queries.pagination import INSTANT_AND_ID, decode_cursor, encode_cursor
from queries.stuck import AS_OF, STUCK_COLUMNS, STUCK_FILTER

RUN_COLUMNS = ("run_id, agent_id, project, state, attempt, budget_micros, labels, error, requested_at, "
               "started_at, ended_at, updated_at, version, step_count, tool_call_count, cost_micros, "
               "tokens_in, tokens_out, EXTRACT(EPOCH FROM (COALESCE(ended_at, now()) - started_at)) AS duration_s, "
               + STUCK_COLUMNS)
# The columns that hold content fields (queries/content.py opens them), besides runs.labels/error and steps.error
TOOL_CALL_CONTENT = ("decision_reason", "error")
APPROVAL_CONTENT = ("action", "decision_reason")


class NotCaughtUp(Refused):
    """The read model has not applied the tenant's chain as far as min_seq asked: try again shortly."""

    def __init__(self, projection: str, wanted: int, applied: int):
        super().__init__(503, "not_caught_up", f"the {projection} read model has applied this tenant's chain up to "
                                               f"chain_seq {applied}, not yet {wanted}",
                         {"read_model": projection, "wanted_seq": wanted, "applied_seq": applied},
                         {"Retry-After": "1"})
        self.projection, self.wanted, self.applied = projection, wanted, applied


class TenantHeld(Refused):
    """This tenant is held in a read model: what it serves stops before `chain_seq`."""

    def __init__(self, projection: str, chain_seq: int, held_at):
        super().__init__(503, "read_model_held",
                         f"this tenant's {projection} read model is held before chain_seq {chain_seq} "
                         f"(since {held_at:%Y-%m-%dT%H:%M:%SZ}): an event could not be applied, and what it "
                         "shows stops before it; operators have been told, and it catches up once resumed",
                         {"read_model": projection, "held_before_seq": chain_seq, "held_since": held_at.isoformat()})
        self.projection, self.chain_seq, self.held_at = projection, chain_seq, held_at


async def wait_for_seq(name: str, min_seq: int | None, wait_ms: int, applied: Callable[[], Awaitable[int]]) -> None:
    """Return once applied() reaches min_seq, or raise NotCaughtUp after wait_ms."""
    if not min_seq:
        return
    deadline = time.monotonic() + wait_ms / 1000
    while (seq := await applied()) < min_seq:
        if time.monotonic() >= deadline:
            raise NotCaughtUp(name, min_seq, seq)
        await asyncio.sleep(0.02)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ReadModels:
    """content opens sealed content fields (queries/content.py); None where no KEK is configured.

    `clock`: the now a run's `stuck` and `overdue_s` are computed against (queries/stuck.py)."""

    clock: Callable[[], datetime] = staticmethod(utcnow)

    def __init__(self, pool: AsyncConnectionPool, topic_prefix: str, content: Content | None = None):
        self.pool = pool
        self.prefix = topic_prefix
        self.generations = PostgresGenerations(pool, topic_prefix)
        self.reader = ContentReader(content)

    async def fetch(self, name: str, sql: str, params: tuple) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            live = await self.generations.live_on(conn, name)
            if live is None:
                return []
            await cur.execute(sql.format(s=live[0]), params)
            return await cur.fetchall()

    async def applied_seq(self, name: str, tenant_id: str) -> int:
        rows = await self.fetch(name, "SELECT chain_seq FROM {s}.heads WHERE tenant_id = %s", (tenant_id,))
        return rows[0]["chain_seq"] if rows else 0

    async def wait_for(self, name: str, tenant_id: str, min_seq: int | None, wait_ms: int) -> None:
        """Return once the read model has applied the tenant's chain up to min_seq, or raise NotCaughtUp.

        A tenant held in that read model is told so (TenantHeld) instead of being shown a partial answer.
        """
        held = await self.fetch(name, "SELECT chain_seq, held_at FROM {s}.held WHERE tenant_id = %s", (tenant_id,))
        if held:
            raise TenantHeld(name, held[0]["chain_seq"], held[0]["held_at"])
        await wait_for_seq(name, min_seq, wait_ms, lambda: self.applied_seq(name, tenant_id))

    async def list_runs(self, tenant_id: str, state: str | None, agent_id: str | None,
                        since: str | None, until: str | None, cursor: str | None, limit: int,
                        stuck: bool | None = None) -> dict:
        after = decode_cursor(cursor, INSTANT_AND_ID)
        where, params = ["tenant_id = %s"], [self.clock(), tenant_id]
        if stuck is not None:
            where.append(STUCK_FILTER[stuck])
        for clause, value in (("state = %s", state), ("agent_id = %s", agent_id),
                              ("requested_at >= %s", since), ("requested_at < %s", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if after:
            where.append("(requested_at, run_id) < (%s::timestamptz, %s::uuid)")
            params += after
        rows = await self.fetch("runs", f"SELECT {RUN_COLUMNS} FROM {{s}}.runs {AS_OF} WHERE {' AND '.join(where)} "
                                        "ORDER BY requested_at DESC, run_id DESC LIMIT %s", (*params, limit + 1))
        await self.reader.reveal(tenant_id, [(r, name) for r in rows[:limit] for name in ("labels", "error")])
        return page(rows, limit, lambda r: [r["requested_at"].isoformat(), str(r["run_id"])])

    async def get_run(self, tenant_id: str, run_id: str) -> dict | None:
        runs = await self.fetch("runs", f"SELECT {RUN_COLUMNS} FROM {{s}}.runs {AS_OF} WHERE tenant_id = %s "
                                        "AND run_id = %s", (self.clock(), tenant_id, run_id))
        if not runs:
            return None
        steps = await self.fetch("runs", "SELECT step_id, kind, name, attempt, outcome, error, started_at, finished_at "
                                         "FROM {s}.steps WHERE tenant_id = %s AND run_id = %s ORDER BY started_at, step_id",
                                 (tenant_id, run_id))
        calls = await self.fetch("runs", "SELECT tool_call_id, step_id, tool, risk_tier, params_digest, state, decision, "
                                         "policy_id, policy_version, decision_reason, approval_id, result_digest, error, "
                                         "requested_at, decided_at, finished_at FROM {s}.tool_calls "
                                         "WHERE tenant_id = %s AND run_id = %s ORDER BY requested_at, tool_call_id",
                                 (tenant_id, run_id))
        await self.reader.reveal(tenant_id, [(runs[0], "labels"), (runs[0], "error"),
                                             *((step, "error") for step in steps),
                                             *((call, name) for call in calls for name in TOOL_CALL_CONTENT)])
        return {**runs[0], "steps": steps, "tool_calls": calls}

    async def approval_queue(self, tenant_id: str, role: str | None, cursor: str | None, limit: int) -> dict:
        after = decode_cursor(cursor, INSTANT_AND_ID)
        where, params = ["tenant_id = %s", "state = 'pending'"], [tenant_id]
        if role:
            where.append("required_role = %s")
            params.append(role)
        if after:
            where.append("(requested_at, approval_id) > (%s::timestamptz, %s::uuid)")
            params += after
        rows = await self.fetch("approvals", f"SELECT * FROM {{s}}.approvals WHERE {' AND '.join(where)} "
                                             "ORDER BY requested_at, approval_id LIMIT %s", (*params, limit + 1))
        await self.reader.reveal(tenant_id, [(r, name) for r in rows[:limit] for name in APPROVAL_CONTENT])
        return page([strip(r) for r in rows], limit, lambda r: [r["requested_at"].isoformat(), str(r["approval_id"])])

    async def get_approval(self, tenant_id: str, approval_id: str) -> dict | None:
        rows = await self.fetch("approvals", "SELECT * FROM {s}.approvals WHERE tenant_id = %s AND approval_id = %s",
                                (tenant_id, approval_id))
        if not rows:
            return None
        votes = await self.fetch("approvals", "SELECT approver, reason, voted_at FROM {s}.approval_votes "
                                              "WHERE tenant_id = %s AND approval_id = %s ORDER BY chain_seq",
                                 (tenant_id, approval_id))
        await self.reader.reveal(tenant_id, [*((rows[0], name) for name in APPROVAL_CONTENT),
                                             *((vote, "reason") for vote in votes)])
        return {**strip(rows[0]), "votes": votes}


def strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("tenant_id", "last_chain_seq")}


def page(rows: list[dict], limit: int, key) -> dict:
    more = len(rows) > limit
    items = rows[:limit]
    return {"items": items, "next_cursor": encode_cursor(key(items[-1])) if more and items else None}
