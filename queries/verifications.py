"""The tenant's recorded verifications of its read models, newest first: the audit rows of `verification.recorded`.

Each is an event on the tenant's own chain (domain/evidence.py `Verification`), so it is read where every
event is, the audit/discovery model, and is itself covered by the next verification. Never swept: it has
no run.
"""
import json

from queries.discovery import Discovery
from queries.pagination import CHAIN_SEQ, decode_cursor, encode_cursor
from schemas.envelope import iso

RECORDED = "verification.recorded"
COLUMNS = "chain_seq, aggregate_id, recorded_at, actor_subject, payload"


def view(row: dict) -> dict:
    p = json.loads(row["payload"])
    return {"verification_id": row["aggregate_id"], "chain_seq": row["chain_seq"],
            "recorded_at": iso(row["recorded_at"]),
            "verified_by": p["verified_by"], "chain_size": p["chain_size"], "ok": p["ok"], "models": p["models"],
            "problems": p["problems"]}


class Verifications:
    def __init__(self, discovery: Discovery):
        self.discovery = discovery

    async def wait_for(self, tenant_id: str, min_seq: int | None, wait_ms: int) -> None:
        await self.discovery.wait_for(self.discovery.audit, tenant_id, min_seq, wait_ms)

    async def rows(self, where: str, params: dict) -> list[dict]:
        return await self.discovery.query(self.discovery.audit, f"SELECT {COLUMNS} FROM {{db}}.events FINAL WHERE "
                                          f"tenant_id = {{t:String}} AND type = '{RECORDED}'{where} "
                                          "ORDER BY chain_seq DESC LIMIT {limit:UInt32}", params)

    async def list(self, tenant_id: str, cursor: str | None, limit: int) -> dict:
        after = decode_cursor(cursor, CHAIN_SEQ)
        where, params = "", {"t": tenant_id, "limit": limit + 1}
        if after:
            where, params["after"] = " AND chain_seq < {after:UInt64}", after[0]
        rows = await self.rows(where, params)
        items = [view(r) for r in rows[:limit]]
        more = len(rows) > limit
        return {"items": items, "next_cursor": encode_cursor([items[-1]["chain_seq"]]) if more else None}

    async def get(self, tenant_id: str, verification_id: str) -> dict | None:
        rows = await self.rows(" AND aggregate_id = {id:String}", {"t": tenant_id, "id": verification_id, "limit": 1})
        return view(rows[0]) if rows else None
