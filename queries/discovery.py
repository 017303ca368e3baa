"""Audit/discovery search and cost views over ClickHouse: always the live generation, one tenant."""
import asyncio
import json
from datetime import datetime
from typing import Any

from infra.adapters.keys.port import Content
from projectors.ch import ClickHouseProjection
from queries.content import ContentReader, content_of
from schemas.envelope import iso
from queries.pagination import CHAIN_SEQ, decode_cursor, encode_cursor
from queries.readmodels import TenantHeld, wait_for_seq

FILTERS = {  # query parameter → (column, ClickHouse type)
    "actor": ("actor_subject", "String"), "type": ("type", "String"), "run_id": ("run_id", "String"),
    "tool": ("tool", "String"), "decision": ("decision", "String"), "aggregate_id": ("aggregate_id", "String"),
    "tool_call_id": ("tool_call_id", "String"), "approval_id": ("approval_id", "String"),
}
GROUPS = {"project": "project", "run": "run_id", "model": "model", "provider": "provider", "day": "day"}
TIMES = {"recorded": "recorded_at", "occurred": "occurred_at"}  # the processor's clock, or the client's (`occurred_at`)


def time_range(where: list[str], params: dict, since: datetime | None, until: datetime | None,
               column: str = "recorded_at") -> None:
    """Add a window [since, until) of `column` (recorded_at unless told) to a query being built."""
    if since:
        where.append(f"{column} >= {{since:DateTime64(6, 'UTC')}}")
        params["since"] = since
    if until:
        where.append(f"{column} < {{until:DateTime64(6, 'UTC')}}")
        params["until"] = until


def envelope_of(tenant_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """The envelope an audit row records (payload parsed), so its hash recomputes from the row alone.

    `idempotency_key` is on the chain only for events whose command carried one (schemas/envelope.py).
    """
    envelope = {"event_id": row["event_id"], "tenant_id": tenant_id, "chain_seq": row["chain_seq"],
            "prev_hash": row["prev_hash"], "hash": row["hash"], "type": row["type"],
            "schema_version": row["schema_version"], "aggregate_type": row["aggregate_type"],
            "aggregate_id": row["aggregate_id"], "aggregate_version": row["aggregate_version"],
            "occurred_at": iso(row["occurred_at"]), "recorded_at": iso(row["recorded_at"]),
            "actor": {"subject": row["actor_subject"], "roles": list(row["actor_roles"])},
            "command_id": row["command_id"], "causation_id": row["causation_id"],
            "correlation_id": row["correlation_id"], "traceparent": row["traceparent"], "payload": row["payload"]}
    if row.get("idempotency_key") is not None:
        envelope["idempotency_key"] = row["idempotency_key"]
    return envelope


class Discovery:
    """content opens sealed content fields (queries/content.py); None where no KEK is configured."""

    def __init__(self, audit: ClickHouseProjection, cost: ClickHouseProjection, content: Content | None = None):
        self.audit, self.cost = audit, cost
        self.reader = ContentReader(content)

    async def query(self, projection: ClickHouseProjection, sql: str, params: dict) -> list[dict[str, Any]]:
        def run():
            live = projection.generations.live_now(projection.name)
            return projection.ch.query(sql.replace("{db}", live[0]), params) if live else []
        return await asyncio.to_thread(run)

    async def wait_for(self, projection: ClickHouseProjection, tenant_id: str, min_seq: int | None, wait_ms: int) -> None:
        """As ReadModels.wait_for: wait for min_seq, and say so (TenantHeld) if the tenant is held there."""
        held = await self.query(projection, "SELECT argMax(chain_seq, at) AS seq, argMax(held_at, at) AS since, "
                                            "argMax(state, at) AS state FROM {db}.held WHERE tenant_id = {t:String} "
                                            "GROUP BY tenant_id", {"t": tenant_id})
        if held and held[0]["state"] != "released":
            raise TenantHeld(projection.name, held[0]["seq"], held[0]["since"])

        async def applied() -> int:
            rows = await self.query(projection, "SELECT max(chain_seq) AS seq FROM {db}.progress "
                                                "WHERE tenant_id = {t:String}", {"t": tenant_id})
            return rows[0]["seq"] if rows else 0
        await wait_for_seq(projection.name, min_seq, wait_ms, applied)

    async def search(self, tenant_id: str, filters: dict[str, str | None], since: datetime | None,
                     until: datetime | None, cursor: str | None, limit: int, time: str = "recorded") -> dict:
        """`time` says which instant since/until bound: `recorded` (recorded_at) or `occurred` (occurred_at)."""
        where, params = ["tenant_id = {tenant:String}"], {"tenant": tenant_id, "limit": limit + 1}
        for name, value in filters.items():
            if value is not None:
                column, kind = FILTERS[name]
                where.append(f"{column} = {{{name}:{kind}}}")
                params[name] = value
        time_range(where, params, since, until, TIMES[time])
        after = decode_cursor(cursor, CHAIN_SEQ)
        if after:
            where.append("chain_seq < {after:UInt64}")
            params["after"] = after[0]
        rows = await self.query(self.audit, "SELECT * EXCEPT (tenant_id) FROM {db}.events FINAL WHERE "
                                + " AND ".join(where) + " ORDER BY chain_seq DESC LIMIT {limit:UInt32}", params)
        more = len(rows) > limit
        items = rows[:limit]
        for row in items:  # the payload as stored (so the row re-hashes); its content fields opened beside it
            row["payload"] = json.loads(row["payload"])
            row["content"] = content_of(row["payload"])
        await self.reader.reveal(tenant_id, [(row["content"], name) for row in items for name in row["content"]])
        return {"items": items, "next_cursor": encode_cursor([items[-1]["chain_seq"]]) if more and items else None}

    async def rollup(self, tenant_id: str, group_by: list[str], since: datetime | None,
                     until: datetime | None) -> list[dict]:
        columns = ", ".join(f"{GROUPS[g]} AS {g}" for g in group_by)
        where, params = ["tenant_id = {tenant:String}"], {"tenant": tenant_id}
        time_range(where, params, since, until)
        keys = ", ".join(group_by + ["currency"])
        return await self.query(self.cost, f"SELECT {columns + ', ' if columns else ''}currency, "
                                "sum(amount_micros) AS amount_micros, sum(tokens_in) AS tokens_in, "
                                "sum(tokens_out) AS tokens_out, count() AS entries FROM {db}.cost_entries FINAL "
                                f"WHERE {' AND '.join(where)} GROUP BY {keys} ORDER BY {keys}", params)

    async def budgets(self, tenant_id: str, today: str) -> list[dict]:
        return await self.query(self.cost, """
            SELECT b.project AS project, b.period AS period, b.limit_micros AS limit_micros, b.currency AS currency,
                   sumIf(c.amount_micros, c.tenant_id != '' AND (b.period = 'total'
                        OR (b.period = 'month' AND toStartOfMonth(c.day) = toStartOfMonth(toDate({today:String})))
                        OR (b.period = 'day' AND c.day = toDate({today:String})))) AS used_micros
            FROM (SELECT * FROM {db}.budgets FINAL WHERE tenant_id = {tenant:String}) AS b
            LEFT JOIN (SELECT * FROM {db}.cost_entries FINAL WHERE tenant_id = {tenant:String}) AS c
                   ON c.project = b.project
            GROUP BY project, period, limit_micros, currency ORDER BY project""", {"tenant": tenant_id, "today": today})
