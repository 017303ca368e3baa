"""Read legal holds, what each covers in every store, retention policies and sweeps: one tenant."""
from typing import Any

from domain.retention import DEFAULT_DAYS
from projectors.channels import family_rows
from queries.discovery import Discovery
from queries.pagination import CHAIN_SEQ, decode_cursor
from queries.readmodels import ReadModels, page

# Covered run families from the audit store: every event of the tenant is there with its run.
FAMILIES = {
    "tenant": "SELECT DISTINCT run_id FROM {db}.events WHERE tenant_id = {t:String} AND run_id IS NOT NULL",
    "run": "SELECT DISTINCT run_id FROM {db}.events WHERE tenant_id = {t:String} AND run_id = {run_id:String}",
    "aggregate": "SELECT DISTINCT run_id FROM {db}.events WHERE tenant_id = {t:String} AND run_id IS NOT NULL "
                 "AND (aggregate_id = {aggregate_id:String} OR run_id = {aggregate_id:String})",
    "subject": "SELECT DISTINCT run_id FROM {db}.events WHERE tenant_id = {t:String} AND run_id IS NOT NULL "
               "AND actor_subject = {subject:String}",
    "time_range": "SELECT run_id FROM {db}.events WHERE tenant_id = {t:String} AND run_id IS NOT NULL "
                  "GROUP BY run_id HAVING min(recorded_at) < parseDateTime64BestEffort({end:String}, 6) "
                  "AND max(recorded_at) >= parseDateTime64BestEffort({start:String}, 6)",
}
PG_COUNTS = {
    "runs": ("runs", "SELECT count(*) AS n FROM {s}.runs WHERE tenant_id = %s AND run_id = ANY(%s::uuid[])"),
    "approvals": ("approvals", "SELECT count(*) AS n FROM {s}.approvals WHERE tenant_id = %s "
                               "AND run_id = ANY(%s::uuid[])"),
}


class Governance:
    def __init__(self, models: ReadModels, discovery: Discovery):
        self.models, self.discovery = models, discovery

    async def list_holds(self, tenant_id: str, state: str | None, cursor: str | None, limit: int) -> dict:
        after = decode_cursor(cursor, CHAIN_SEQ)
        where, params = ["tenant_id = %s"], [tenant_id]
        if state:
            where.append("state = %s")
            params.append(state)
        if after:
            where.append("placed_seq < %s")
            params += after
        rows = await self.models.fetch("governance", f"SELECT * FROM {{s}}.legal_holds WHERE {' AND '.join(where)} "
                                                     "ORDER BY placed_seq DESC LIMIT %s", (*params, limit + 1))
        return page([hold_view(r) for r in rows], limit, lambda r: [r["placed_seq"]])

    async def get_hold(self, tenant_id: str, hold_id: str) -> dict | None:
        rows = await self.models.fetch("governance", "SELECT * FROM {s}.legal_holds WHERE tenant_id = %s "
                                                     "AND hold_id = %s", (tenant_id, hold_id))
        if not rows:
            return None
        history = await self.models.fetch("governance", "SELECT chain_seq, type, actor, reason, recorded_at "
                                                        "FROM {s}.hold_history WHERE tenant_id = %s AND hold_id = %s "
                                                        "ORDER BY chain_seq", (tenant_id, hold_id))
        hold = hold_view(rows[0])
        return {**hold, "history": history, "covers": await self.coverage(tenant_id, hold["scope"])}

    async def coverage(self, tenant_id: str, scope: dict[str, Any]) -> dict[str, int]:
        """Rows a hold keeps, per store: every record of each run family the scope touches."""
        params = {"t": tenant_id, **{k: v for k, v in scope.items() if k != "kind"}}
        rows = await self.discovery.query(self.discovery.audit, FAMILIES[scope["kind"]], params)
        runs = sorted({r["run_id"] for r in rows})
        counts = {"runs_covered": len(runs)}
        for store, (projection, sql) in PG_COUNTS.items():
            found = await self.models.fetch(projection, sql, (tenant_id, runs))
            counts[store] = found[0]["n"] if found else 0
        where, params = family_rows("{s}", tenant_id, runs)
        found = await self.models.fetch("channels", f"SELECT count(*) AS n FROM {{s}}.channel_events e WHERE {where}",
                                        params)
        counts["channels"] = found[0]["n"] if found else 0
        for store, projection, table in (("audit", self.discovery.audit, "events"),
                                         ("cost", self.discovery.cost, "cost_entries")):
            found = await self.discovery.query(projection, f"SELECT count() AS n FROM {{db}}.{table} FINAL "
                                                           "WHERE tenant_id = {t:String} AND run_id IN {runs:Array(String)}",
                                               {"t": tenant_id, "runs": runs})
            counts[store] = found[0]["n"] if found else 0
        return counts

    async def policies(self, tenant_id: str) -> dict:
        rows = await self.models.fetch("governance", "SELECT record_class, days, policy_version, set_by, set_at "
                                                     "FROM {s}.retention_policies WHERE tenant_id = %s", (tenant_id,))
        found = {r["record_class"]: r for r in rows}
        return {"items": [found.get(c) or {"record_class": c, "days": days, "policy_version": 0, "set_by": None,
                                           "set_at": None}
                          for c, days in DEFAULT_DAYS.items()]}

    async def sweeps(self, tenant_id: str, cursor: str | None, limit: int) -> dict:
        after = decode_cursor(cursor, CHAIN_SEQ)
        where, params = ["tenant_id = %s"], [tenant_id]
        if after:
            where.append("chain_seq < %s")
            params += after
        rows = await self.models.fetch("governance", f"SELECT * FROM {{s}}.sweeps WHERE {' AND '.join(where)} "
                                                     "ORDER BY chain_seq DESC LIMIT %s", (*params, limit + 1))
        return page([{k: v for k, v in r.items() if k != "tenant_id"} for r in rows], limit,
                    lambda r: [r["chain_seq"]])


def hold_view(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "tenant_id"}
