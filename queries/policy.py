"""Policy history, active envelopes, violations and simulations: read from the audit store, one tenant.

The audit read model holds every event with its payload, so the policy book is folded here from
its `policy.*` rows rather than kept in another store. A simulation evaluates a draft against the
requests recorded in `tool_call.policy_decided` events and appends nothing.
"""
import json
from typing import Any

from domain.policies import lookup_order, scope_label
from domain.policy import PolicyEnvelope, evaluate, validate
from queries.discovery import Discovery
from queries.pagination import CHAIN_SEQ, decode_cursor, encode_cursor
from schemas.envelope import iso

ROWS = ("SELECT chain_seq, type, aggregate_id, recorded_at, actor_subject, payload FROM {db}.events FINAL "
        "WHERE tenant_id = {t:String} AND type IN {types:Array(String)}")
EVIDENCE = ("decision", "policy_id", "policy_version", "digest", "determining", "reason", "cause", "obligations")


def row_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**json.loads(row["payload"]), "chain_seq": row["chain_seq"], "recorded_at": iso(row["recorded_at"]),
            "recorded_by": row["actor_subject"]}


class PolicyQueries:
    def __init__(self, discovery: Discovery):
        self.discovery = discovery

    async def rows(self, tenant_id: str, types: list[str], extra: str = "", **params) -> list[dict[str, Any]]:
        return await self.discovery.query(self.discovery.audit, ROWS + extra + " ORDER BY chain_seq",
                                          {"t": tenant_id, "types": types, **params})

    async def book(self, tenant_id: str) -> tuple[list[dict], list[dict]]:
        rows = await self.rows(tenant_id, ["policy.published", "policy.activated"])
        published = [row_view(r) for r in rows if r["type"] == "policy.published"]
        activated = [row_view(r) for r in rows if r["type"] == "policy.activated"]
        return published, activated

    @staticmethod
    def active_now(activated: list[dict]) -> dict[tuple, dict]:
        return {(a["project"], a["environment"]): a for a in activated}

    async def list_policies(self, tenant_id: str) -> dict:
        published, activated = await self.book(tenant_id)
        active = self.active_now(activated)
        items: dict[str, dict] = {}
        for p in published:
            item = items.setdefault(p["policy_id"], {"policy_id": p["policy_id"], "versions": 0})
            item.update(versions=item["versions"] + 1, latest_version=p["version"], latest_digest=p["digest"])
        for item in items.values():
            item["active"] = [{"version": a["version"], "project": a["project"], "environment": a["environment"],
                               "digest": a["digest"]} for a in active.values() if a["policy_id"] == item["policy_id"]]
        return {"items": list(items.values())}

    async def versions(self, tenant_id: str, policy_id: str, full: bool = False) -> list[dict]:
        published, activated = await self.book(tenant_id)
        found = []
        for p in (p for p in published if p["policy_id"] == policy_id):
            view = p if full else {k: v for k, v in p.items() if k not in ("policies", "cedar_schema")}
            found.append({**view, "activations": [
                {k: a[k] for k in ("project", "environment", "chain_seq", "recorded_at", "activated_by")}
                for a in activated if (a["policy_id"], a["version"]) == (policy_id, p["version"])]})
        return found

    async def version(self, tenant_id: str, policy_id: str, version: str) -> dict | None:
        return next((v for v in await self.versions(tenant_id, policy_id, full=True) if v["version"] == version), None)

    async def active(self, tenant_id: str, project: str | None, environment: str | None) -> dict:
        published, activated = await self.book(tenant_id)
        active = self.active_now(activated)
        for scope in lookup_order(project, environment):
            if scope in active:
                a = active[scope]
                envelope = next(p for p in published if (p["policy_id"], p["version"]) == (a["policy_id"], a["version"]))
                return {"scope": scope_label(scope), "activation": a, "envelope": envelope}
        return {"scope": scope_label((project, environment)), "activation": None, "envelope": None,
                "decision": "DENY: no envelope is active, so every call is denied by default"}

    async def violations(self, tenant_id: str, cursor: str | None, limit: int) -> dict:
        after = decode_cursor(cursor, CHAIN_SEQ)
        extra = " AND chain_seq < {after:UInt64}" if after else ""
        rows = await self.discovery.query(
            self.discovery.audit, ROWS + extra + " ORDER BY chain_seq DESC LIMIT {limit:UInt32}",
            {"t": tenant_id, "types": ["tool_call.violation_recorded"], "limit": limit + 1,
             **({"after": after[0]} if after else {})})
        items = [{"tool_call_id": r["aggregate_id"], **row_view(r)} for r in rows[:limit]]
        more = len(rows) > limit and items
        return {"items": items, "next_cursor": encode_cursor([items[-1]["chain_seq"]]) if more else None}

    async def simulate(self, tenant_id: str, draft: PolicyEnvelope, last: int) -> dict:
        """Evaluate the draft against the tenant's last `last` recorded requests; append nothing."""
        validate(draft)
        rows = await self.discovery.query(
            self.discovery.audit, ROWS + " ORDER BY chain_seq DESC LIMIT {limit:UInt32}",
            {"t": tenant_id, "types": ["tool_call.policy_decided"], "limit": last})
        return simulation(draft, [{"tool_call_id": r["aggregate_id"], **row_view(r)} for r in reversed(rows)])


def simulation(draft: PolicyEnvelope, recorded: list[dict]) -> dict:
    """Which recorded decisions the draft would change, and why; requests decided externally are not replayable."""
    changed, same, skipped = [], 0, 0
    for record in recorded:
        if not record.get("request"):
            skipped += 1
            continue
        would = evaluate(draft, record["request"]).evidence()
        if would["decision"] == record["decision"] and would.get("obligations") == record.get("obligations"):
            same += 1
            continue
        changed.append({"tool_call_id": record["tool_call_id"], "chain_seq": record["chain_seq"],
                        "tool": record["request"]["context"]["tool"],
                        "recorded": {k: record.get(k) for k in EVIDENCE}, "simulated": would})
    return {"policy_id": draft.policy_id, "version": draft.version, "digest": draft.digest,
            "evaluated": len(recorded) - skipped, "unchanged": same, "not_replayable": skipped, "changed": changed}
