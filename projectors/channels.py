"""SSE channels read model (Postgres): per-channel ordered copies of events with a channel sequence.

Channels of a tenant: `tenant` (every event), `run:<run_id>` (the run's own events and those of
its tool calls and approvals) and `approvals` (every approval event). The channel sequence is the
SSE `id`. Rows, channel heads and the projector position commit in one transaction, and a
NOTIFY in that transaction wakes the streams API only once the rows are visible.

A retention sweep of this store (projectors/removals.py) removes its families' rows: the whole of
each `run:<id>` channel, and the rows of the `tenant` and `approvals` channels whose event belongs
to a swept family, then the families' `aggregate_runs`. Channel heads keep counting, so an SSE id
is never reused; a swept run channel's `oldest` moves past its head (everything in it is gone),
and the other channels just have gaps, which readers skip (streams/reader.py). The sweep event
and the governance events stay in the tenant channel.
"""
import json

from psycopg import AsyncConnection

from projectors.base import Envelope
from projectors.pg import PostgresProjection, Statement
from projectors.removals import Sweep, sweeps

NOTIFY_CHANNEL = "runledger_sse"

DDL = """
CREATE TABLE IF NOT EXISTS {s}.channel_events (
    tenant_id text NOT NULL, channel text NOT NULL, seq bigint NOT NULL, chain_seq bigint NOT NULL,
    type text NOT NULL, envelope jsonb NOT NULL,
    PRIMARY KEY (tenant_id, channel, seq)
);
CREATE TABLE IF NOT EXISTS {s}.channel_heads (
    tenant_id text NOT NULL, channel text NOT NULL, seq bigint NOT NULL, oldest bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, channel)
);
CREATE TABLE IF NOT EXISTS {s}.aggregate_runs (
    tenant_id text NOT NULL, aggregate_id text NOT NULL, run_id text NOT NULL,
    PRIMARY KEY (tenant_id, aggregate_id)
);
"""


NOTIFY_LIMIT = 7000  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more


def notifications(schema: str, heads: list[list]) -> list[str]:
    """Split the new channel heads into NOTIFY payloads that each fit the server's limit."""
    notes, chunk = [], []
    for head in heads:
        if chunk and len(json.dumps({"schema": schema, "channels": chunk + [head]})) > NOTIFY_LIMIT:
            notes.append(json.dumps({"schema": schema, "channels": chunk}))
            chunk = []
        chunk.append(head)
    if chunk:
        notes.append(json.dumps({"schema": schema, "channels": chunk}))
    return notes


def channels_of(env: Envelope, run_id: str | None) -> list[str]:
    channels = ["tenant"]
    if run_id:
        channels.append(f"run:{run_id}")
    if env["aggregate_type"] == "approval":
        channels.append("approvals")
    return channels


def family_rows(schema: str, tenant_id: str, runs: list[str]) -> tuple[str, tuple]:
    """The channel rows (alias `e`) of these runs' families: their run channels, and their events elsewhere."""
    member = (f"(e.envelope->>'aggregate_type' = 'run' AND e.envelope->>'aggregate_id' = ANY(%s)) "
              f"OR e.envelope->>'aggregate_id' IN (SELECT aggregate_id FROM {schema}.aggregate_runs "
              "WHERE tenant_id = %s AND run_id = ANY(%s)) "
              "OR (e.type = 'budget.cost_recorded' AND e.envelope->'payload'->>'run_id' = ANY(%s))")
    return (f"e.tenant_id = %s AND (e.channel = ANY(%s) OR (e.channel IN ('tenant', 'approvals') AND ({member})))",
            (tenant_id, [f"run:{r}" for r in runs], runs, tenant_id, runs, runs))


class ChannelsProjection(PostgresProjection):
    name = "channels"
    ddl = DDL

    retain = 100_000  # newest events kept per channel; set from RUNLEDGER_SSE_RETAIN by bootstrap

    async def fresh_generation(self, generation: int) -> "ChannelsProjection":
        target = await super().fresh_generation(generation)
        target.retain = self.retain
        return target

    async def write(self, conn: AsyncConnection, envelopes: list[Envelope]) -> None:
        runs = await self.run_ids(conn, envelopes)
        placed = [(env, channels_of(env, runs.get((env["tenant_id"], env["aggregate_id"])))) for env in envelopes]
        keys = sorted({(env["tenant_id"], c) for env, cs in placed for c in cs})
        heads, oldest = await self.heads_of(conn, keys)
        rows = []
        for env, channels in placed:
            for channel in channels:
                key = (env["tenant_id"], channel)
                heads[key] = heads.get(key, 0) + 1
                rows.append((env["tenant_id"], channel, heads[key], env["chain_seq"], env["type"], json.dumps(dict(env))))
        async with conn.cursor() as cur:
            await cur.executemany(f"INSERT INTO {self.schema}.channel_events VALUES (%s, %s, %s, %s, %s, %s) "
                                  "ON CONFLICT DO NOTHING", rows)
            await cur.executemany(
                f"INSERT INTO {self.schema}.channel_heads (tenant_id, channel, seq) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id, channel) DO UPDATE SET seq = excluded.seq",
                [(t, c, heads[(t, c)]) for t, c in keys])
            await self.trim(cur, heads, oldest)
            for sweep in sweeps(self.name, envelopes):  # after the poll's rows: none of its families follows it
                for sql, params in self.swept(sweep):
                    await cur.execute(sql, params)
            for note in notifications(self.schema, [[t, c, heads[(t, c)]] for t, c in keys]):
                await cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, note))

    async def trim(self, cur, heads: dict[tuple[str, str], int], oldest: dict[tuple[str, str], int]) -> None:
        """Keep the newest `retain` events of each channel (a little more, to trim in bulk)."""
        for (tenant, channel), head in heads.items():
            keep_from = head - self.retain + 1
            if keep_from - oldest.get((tenant, channel), 1) > max(1, self.retain // 10):
                await cur.execute(f"DELETE FROM {self.schema}.channel_events WHERE tenant_id = %s AND channel = %s "
                                  "AND seq < %s", (tenant, channel, keep_from))
                await cur.execute(f"UPDATE {self.schema}.channel_heads SET oldest = %s WHERE tenant_id = %s "
                                  "AND channel = %s", (keep_from, tenant, channel))

    def swept(self, sweep: Sweep) -> list[Statement]:
        """Remove a sweep's families from the channels, then forget which run their aggregates belong to."""
        s, t, runs = self.schema, sweep.tenant_id, sweep.run_ids
        run_channels = [f"run:{r}" for r in runs]
        where, params = family_rows(s, t, runs)
        return [self.removal(sweep, "channel_events", f"DELETE FROM {s}.channel_events e WHERE {where}", params),
                (f"UPDATE {s}.channel_heads SET oldest = seq + 1 WHERE tenant_id = %s AND channel = ANY(%s)",
                 (t, run_channels)),
                self.removal(sweep, "aggregate_runs",
                             f"DELETE FROM {s}.aggregate_runs WHERE tenant_id = %s AND run_id = ANY(%s)", (t, runs))]

    async def run_ids(self, conn: AsyncConnection, envelopes: list[Envelope]) -> dict[tuple[str, str], str]:
        """(tenant, aggregate id) → run id, remembering tool calls and approvals as they are requested."""
        found = {(e["tenant_id"], e["aggregate_id"]): e["aggregate_id"] for e in envelopes if e["aggregate_type"] == "run"}
        new = {(e["tenant_id"], e["aggregate_id"]): e["payload"]["run_id"] for e in envelopes
               if e["type"] in ("tool_call.requested", "approval.requested")}
        found.update(new)
        if new:
            async with conn.cursor() as cur:
                await cur.executemany(f"INSERT INTO {self.schema}.aggregate_runs VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                                      [(t, a, r) for (t, a), r in new.items()])
        wanted = {(e["tenant_id"], e["aggregate_id"]) for e in envelopes
                  if e["aggregate_type"] in ("tool_call", "approval")} - set(found)
        if wanted:
            rows = await (await conn.execute(
                f"SELECT tenant_id, aggregate_id, run_id FROM {self.schema}.aggregate_runs "
                "WHERE (tenant_id, aggregate_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([t for t, _ in wanted], [a for _, a in wanted]))).fetchall()
            found.update({(t, a): r for t, a, r in rows})
        return found

    async def heads_of(self, conn: AsyncConnection, keys: list[tuple[str, str]]) -> tuple[dict, dict]:
        """Return each channel's last seq and oldest retained seq."""
        if not keys:
            return {}, {}
        rows = await (await conn.execute(
            f"SELECT tenant_id, channel, seq, oldest FROM {self.schema}.channel_heads "
            "WHERE (tenant_id, channel) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([t for t, _ in keys], [c for _, c in keys]))).fetchall()
        return {(t, c): s for t, c, s, _ in rows}, {(t, c): o for t, c, _, o in rows}
