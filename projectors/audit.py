"""The audit/discovery read model (ClickHouse): one row per event, searchable by who/what/when.

A retention sweep of this store removes every event row whose run_id is a swept run: the run's
events, its tool calls' and approvals' (their rows carry their run's id) and the costs charged to
it. The sweep's own row, and every governance event, has no run_id and stays.
"""
import json

from projectors.base import Envelope
from projectors.ch import ClickHouseProjection, ts
from projectors.removals import Sweep

COLUMNS = ["tenant_id", "chain_seq", "event_id", "type", "schema_version", "aggregate_type", "aggregate_id",
           "aggregate_version", "occurred_at", "recorded_at", "actor_subject", "actor_roles", "command_id",
           "correlation_id", "run_id", "tool_call_id", "approval_id", "tool", "decision", "policy_id",
           "policy_version", "prev_hash", "hash", "payload", "causation_id", "traceparent", "idempotency_key"]

DDL = ["CREATE TABLE IF NOT EXISTS {db}.events (tenant_id String, chain_seq UInt64, event_id String, "
       "type LowCardinality(String), schema_version UInt16, aggregate_type LowCardinality(String), "
       "aggregate_id String, aggregate_version UInt32, occurred_at DateTime64(6, 'UTC'), "
       "recorded_at DateTime64(6, 'UTC'), actor_subject String, actor_roles Array(String), "
       "command_id Nullable(String), correlation_id Nullable(String), run_id Nullable(String), "
       "tool_call_id Nullable(String), approval_id Nullable(String), tool Nullable(String), "
       "decision Nullable(String), policy_id Nullable(String), policy_version Nullable(String), "
       "prev_hash String, hash String, payload String, causation_id Nullable(String), "
       "traceparent Nullable(String), idempotency_key Nullable(String)) ENGINE = ReplacingMergeTree ORDER BY (tenant_id, chain_seq)"]
# Generations made before a row kept every envelope field get the columns (their old rows re-hash
# only after a rebuild: `runledger projector rebuild audit`).
UPGRADES = ["ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS causation_id Nullable(String)",
            "ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS traceparent Nullable(String)",
            "ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS idempotency_key Nullable(String)"]


def text_or_none(value) -> str | None:
    """A tool policy's version is text; a retention policy's (retention.*) is a number, kept as its digits."""
    return None if value is None else str(value)


class AuditProjection(ClickHouseProjection):
    name = "audit"
    ddl = DDL
    upgrades = UPGRADES
    swept_tables = ("events",)

    def forget(self, sweep: Sweep) -> None:
        # No event of a swept family follows its sweep, so these would never be looked up again: just memory.
        runs = set(sweep.run_ids)
        for key in [k for k, (run_id, _) in self.known.items() if k[0] == sweep.tenant_id and run_id in runs]:
            del self.known[key]

    def rows(self, envelopes: list[Envelope]) -> dict[str, tuple[list[str], list[tuple]]]:
        parents = self.parents(envelopes)
        return {"events": (COLUMNS, [self.row(env, parents) for env in envelopes])}

    def parents(self, envelopes: list[Envelope]) -> dict[tuple[str, str], tuple[str | None, str | None]]:
        """(tenant, tool call or approval id) → (run_id, tool): remembered, from this batch, or from earlier rows."""
        keys = {(e["tenant_id"], e["aggregate_id"]) for e in envelopes if e["aggregate_type"] in ("tool_call", "approval")}
        found = {key: self.known[key] for key in keys if key in self.known}
        found.update({(e["tenant_id"], e["aggregate_id"]): (e["payload"].get("run_id"), e["payload"].get("tool"))
                      for e in envelopes if e["type"] in ("tool_call.requested", "approval.requested")})
        if wanted := keys - found.keys():
            rows = self.ch.query(
                f"SELECT tenant_id, aggregate_id, run_id, tool FROM {self.db}.events "
                "WHERE type IN ('tool_call.requested', 'approval.requested') "
                "AND (tenant_id, aggregate_id) IN {keys:Array(Tuple(String, String))}",
                {"keys": sorted(wanted)})
            found.update({(r["tenant_id"], r["aggregate_id"]): (r["run_id"], r["tool"]) for r in rows})
        self.known.remember(found)
        return found

    @staticmethod
    def row(env: Envelope, parents) -> tuple:
        p, kind, aid = env["payload"], env["aggregate_type"], env["aggregate_id"]
        run_id, tool = parents.get((env["tenant_id"], aid), (None, None))
        if kind == "run":
            run_id = aid
        elif p.get("run_id"):
            run_id = p["run_id"]
        tool_call_id = aid if kind == "tool_call" else p.get("tool_call_id")
        return (env["tenant_id"], env["chain_seq"], env["event_id"], env["type"], env["schema_version"], kind, aid,
                env["aggregate_version"], ts(env["occurred_at"]), ts(env["recorded_at"]), env["actor"]["subject"],
                env["actor"]["roles"], env["command_id"], env["correlation_id"], run_id, tool_call_id,
                aid if kind == "approval" else p.get("approval_id"), p.get("tool") or tool, p.get("decision"),
                p.get("policy_id"), text_or_none(p.get("policy_version")), env["prev_hash"], env["hash"],
                json.dumps(p, separators=(",", ":"), ensure_ascii=False), env.get("causation_id"),
                env.get("traceparent"), env.get("idempotency_key"))
