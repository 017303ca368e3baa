"""The cost ledger (ClickHouse): cost entries in integer micro-units, and budgets.

A retention sweep of this store removes the cost entries charged to its runs. Budgets, their
projects and unattributed costs are governance records and stay, so what `known` remembers
(a budget's project) is never made stale by a sweep.
"""
from projectors.base import Envelope
from projectors.ch import ClickHouseProjection, ts

ENTRY_COLUMNS = ["tenant_id", "chain_seq", "cost_id", "project", "run_id", "provider", "model", "tokens_in",
                 "tokens_out", "amount_micros", "currency", "day", "recorded_at"]
BUDGET_COLUMNS = ["tenant_id", "project", "chain_seq", "period", "limit_micros", "currency"]
DDL = [
    "CREATE TABLE IF NOT EXISTS {db}.cost_entries (tenant_id String, chain_seq UInt64, cost_id String, "
    "project String, run_id Nullable(String), provider LowCardinality(String), model LowCardinality(String), "
    "tokens_in UInt64, tokens_out UInt64, amount_micros Int64, currency LowCardinality(String), day Date, "
    "recorded_at DateTime64(6, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY (tenant_id, chain_seq)",
    "CREATE TABLE IF NOT EXISTS {db}.budgets (tenant_id String, project String, chain_seq UInt64, "
    "period LowCardinality(String), limit_micros Int64, currency LowCardinality(String)) "
    "ENGINE = ReplacingMergeTree(chain_seq) ORDER BY (tenant_id, project)",
    "CREATE TABLE IF NOT EXISTS {db}.budget_projects (tenant_id String, budget_id String, project String) "
    "ENGINE = ReplacingMergeTree ORDER BY (tenant_id, budget_id)",
]


class CostProjection(ClickHouseProjection):
    name = "cost"
    ddl = DDL
    swept_tables = ("cost_entries",)

    def rows(self, envelopes: list[Envelope]) -> dict[str, tuple[list[str], list[tuple]]]:
        entries, budgets, opened = [], [], []
        projects = self.projects(envelopes)
        for env in envelopes:
            p = env["payload"]
            match env["type"]:
                case "budget.opened":
                    opened.append((env["tenant_id"], env["aggregate_id"], p["project"]))
                case "budget.cost_recorded":
                    entries.append((env["tenant_id"], env["chain_seq"], p["cost_id"],
                                    projects[(env["tenant_id"], env["aggregate_id"])], p["run_id"], p["provider"],
                                    p["model"], p["tokens_in"], p["tokens_out"], p["amount_micros"], p["currency"],
                                    ts(env["recorded_at"]).date(), ts(env["recorded_at"])))
                case "budget.limit_set":
                    budgets.append((env["tenant_id"], projects[(env["tenant_id"], env["aggregate_id"])],
                                    env["chain_seq"], p["period"], p["limit_micros"], p["currency"]))
        return {"budget_projects": (["tenant_id", "budget_id", "project"], opened),
                "cost_entries": (ENTRY_COLUMNS, entries), "budgets": (BUDGET_COLUMNS, budgets)}

    def projects(self, envelopes: list[Envelope]) -> dict[tuple[str, str], str]:
        """(tenant, budget aggregate id) → project: remembered, from this batch's budget.opened, or earlier ones."""
        keys = {(e["tenant_id"], e["aggregate_id"]) for e in envelopes
                if e["type"] in ("budget.cost_recorded", "budget.limit_set")}
        found = {key: self.known[key] for key in keys if key in self.known}
        found.update({(e["tenant_id"], e["aggregate_id"]): e["payload"]["project"]
                      for e in envelopes if e["type"] == "budget.opened"})
        if missing := keys - found.keys():
            rows = self.ch.query(f"SELECT DISTINCT tenant_id, budget_id, project FROM {self.db}.budget_projects "
                                 "WHERE (tenant_id, budget_id) IN {keys:Array(Tuple(String, String))}",
                                 {"keys": sorted(missing)})
            found.update({(r["tenant_id"], r["budget_id"]): r["project"] for r in rows})
        self.known.remember(found)
        return found
