"""ClickHouse-backed projections: idempotent rows by (tenant_id, chain_seq), derived positions.

ClickHouse has no multi-table transactions, so a poll's batches (every partition it fetched) are
written as: the rows (ReplacingMergeTree ordered by tenant_id, chain_seq, so a replayed batch
collapses), one insert per table, then one block into `progress` holding each partition's new
position and each tenant's new head. A single-block insert is atomic, so positions and heads never
disagree; a crash between the inserts replays the poll, which changes nothing visible (queries
read with FINAL). Every statement is costly (chdb runs one at a time per process), hence one
insert per table per poll, and the column types named so no insert needs a DESCRIBE.

Each projection lives in one database per generation (projectors/generations.py), and the live
writer re-checks the registry before every poll's inserts.

A retention sweep of this store (projectors/removals.py) is applied after the poll's row inserts:
per table, an INSERT … SELECT count() records in `removals` how many rows the sweep's runs have
(ReplacingMergeTree(rows): the highest count wins, and a replay, which finds at most the rows it
re-inserted, never lowers it), then a lightweight DELETE removes them, synchronously
(`lightweight_deletes_sync = 2`: the statement returns once the rows are gone, on a server too,
whose default may be asynchronous). A replayed poll re-inserts its rows and deletes them again.
A probe builds the sweeps (so a bad payload fails it) but runs none of them.
"""
import asyncio
from datetime import datetime, timezone
from itertools import islice
from typing import Any, Sequence

from infra.adapters.clickhouse import ChdbClickHouse, ClickHouse
from projectors.base import Batch, Envelope, Hold, Position
from projectors.generations import ClickHouseGenerations, Generational
from projectors.removals import Removal, Sweep, sweeps

REMOVALS_DDL = ("CREATE TABLE IF NOT EXISTS {db}.removals (tenant_id String, chain_seq UInt64, "
                "record_class LowCardinality(String), table_name String, rows UInt64, swept_at DateTime64(6, 'UTC')) "
                "ENGINE = ReplacingMergeTree(rows) ORDER BY (tenant_id, chain_seq, table_name)")
SWEPT_ROWS = "tenant_id = {t:String} AND run_id IN {runs:Array(String)}"

BOOKKEEPING_DDL = [
    "CREATE TABLE IF NOT EXISTS {db}.progress (partition UInt32, next_offset UInt64, tenant_id String, "
    "chain_seq UInt64, hash String, last_recorded_at String, written_at DateTime64(6, 'UTC')) "
    "ENGINE = MergeTree ORDER BY (partition, next_offset, tenant_id)",
    "CREATE TABLE IF NOT EXISTS {db}.status (failure Nullable(String), at DateTime64(6, 'UTC')) "
    "ENGINE = MergeTree ORDER BY at",
    # A tenant's latest row says whether it is held: state 'held', 'resume' (asked to replay) or 'released'.
    "CREATE TABLE IF NOT EXISTS {db}.held (tenant_id String, partition UInt32, record_offset UInt64, "
    "chain_seq UInt64, reason String, state LowCardinality(String), held_at DateTime64(6, 'UTC'), "
    "at DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY (tenant_id, at)",
    REMOVALS_DDL,
]
HELD_COLUMNS = ["tenant_id", "partition", "record_offset", "chain_seq", "reason", "state", "held_at", "at"]
PROGRESS_COLUMNS = ["partition", "next_offset", "tenant_id", "chain_seq", "hash", "last_recorded_at", "written_at"]


def progress_rows(batch: Batch, now: datetime) -> list[tuple]:
    """The partition's new position (tenant_id ''), and the new head of each tenant in the batch.

    A tenant's head is its highest chain_seq, whatever the offset beside it: a tenant's catch-up
    after a hold (next_offset None) writes heads without moving the partition's position.
    """
    last = {env["tenant_id"]: env for env in batch.envelopes}
    last_at = batch.envelopes[-1]["recorded_at"] if batch.envelopes else ""
    offset = batch.next_offset or 0
    position = [(batch.partition, offset, "", 0, "", last_at, now)] if batch.next_offset is not None else []
    return position + [(batch.partition, offset, t, e["chain_seq"], e["hash"], e["recorded_at"], now)
                       for t, e in last.items()]


def held_rows(holds: Sequence[Hold], now: datetime) -> list[tuple]:
    return [(h.tenant_id, h.partition, h.offset, h.chain_seq, h.reason, "held", now, now) for h in holds]


def released_rows(tenant_id: str | None, now: datetime) -> list[tuple]:
    return [(tenant_id, 0, 0, 0, "", "released", now, now)] if tenant_id is not None else []


class Recent(dict):
    """Facts already looked up that never change (a tool call's run), at most `limit`, oldest forgotten first."""

    def __init__(self, limit: int = 50_000):
        super().__init__()
        self.limit = limit

    def remember(self, found: dict) -> None:
        self.update(found)
        for key in list(islice(self, max(0, len(self) - self.limit))):
            del self[key]


def ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


class ClickHouseProjection(Generational):
    ddl: list[str] = []
    upgrades: list[str] = []  # run on every open, for generations made before a column existed
    swept_tables: tuple[str, ...] = ()  # tables a sweep of this store removes rows from, by their run_id column
    linger_ms = 100  # every insert makes a part: fewer, bigger inserts
    generations: ClickHouseGenerations

    def __init__(self, ch: ClickHouse, topic_prefix: str, generation: int | None = None):
        super().__init__(ClickHouseGenerations(ch, topic_prefix), generation)
        self.ch = ch
        self.column_types: dict[str, dict[str, str]] = {}  # table → column → type, read once
        self.probe_tables: set[str] = set()  # Null-engine twins made so far
        self.known = Recent()  # what rows() looked up in earlier batches

    @property
    def db(self) -> str:
        return self.location

    @property
    def local(self) -> bool:  # type: ignore[override]
        """The embedded engine's data is this process's own; a server's is shared by every process."""
        return isinstance(self.ch, ChdbClickHouse)

    async def run(self, fn, *args) -> Any:
        return await asyncio.to_thread(fn, *args)

    def creation(self, db: str) -> list[str]:
        return [f"CREATE DATABASE IF NOT EXISTS {db}"] + [s.format(db=db) for s in BOOKKEEPING_DDL + self.ddl]

    def writer_for(self, generation: int) -> "ClickHouseProjection":
        return type(self)(self.ch, self.prefix, generation)

    async def open(self) -> "ClickHouseProjection":
        await super().open()
        await self.run(self.ch.command, REMOVALS_DDL.format(db=self.db))  # for generations made before it existed
        for statement in self.upgrades:
            await self.run(self.ch.command, statement.format(db=self.db))
        return self

    # -- the Projection port ------------------------------------------------------------------
    async def positions(self) -> dict[int, Position]:
        rows = await self.run(self.ch.query,
                              f"SELECT partition, max(next_offset) AS o, argMax(last_recorded_at, next_offset) AS at, "
                              f"max(written_at) AS w FROM {self.db}.progress WHERE tenant_id = '' GROUP BY partition")
        return {r["partition"]: Position(r["partition"], r["o"], r["at"] or None, r["w"]) for r in rows}

    async def head(self, tenant_id: str) -> tuple[int, str]:
        rows = await self.run(self.ch.query,
                              f"SELECT max(chain_seq) AS seq, argMax(hash, chain_seq) AS h, count() AS n "
                              f"FROM {self.db}.progress WHERE tenant_id = {{t:String}}", {"t": tenant_id})
        return (rows[0]["seq"], rows[0]["h"]) if rows and rows[0]["n"] else self.genesis

    async def apply(self, batches: list[Batch], holds: Sequence[Hold] = (), released: str | None = None) -> None:
        await self.run(self._apply, batches, holds, released)

    def _apply(self, batches: list[Batch], holds: Sequence[Hold], released: str | None) -> None:
        """Rows, then holds, then positions: a crash between them replays a poll whose holds already stand."""
        if self.pinned_generation is None:
            self.raise_if_swapped(self.generations.live_now(self.name))
        envelopes = [env for batch in batches for env in batch.envelopes]
        for table, (columns, rows) in self.rows(envelopes).items():
            self.insert(table, columns, rows)
        for sweep in sweeps(self.name, envelopes):
            self.remove(sweep)
        now = datetime.now(timezone.utc)
        # A tenant both held and released here is released: its two rows would share `at`.
        self.insert("held", HELD_COLUMNS, held_rows([h for h in holds if h.tenant_id != released], now))
        self.insert("progress", PROGRESS_COLUMNS, [row for batch in batches for row in progress_rows(batch, now)])
        self.insert("held", HELD_COLUMNS, released_rows(released, now))

    async def probe(self, envelopes: list[Envelope]) -> None:
        await self.run(self._probe, envelopes)

    def _probe(self, envelopes: list[Envelope]) -> None:
        """Build the rows and insert them into Null-engine twins: every conversion runs, nothing is kept."""
        sweeps(self.name, envelopes)  # read (so checked), never run
        for table, (columns, rows) in self.rows(envelopes).items():
            twin = f"{self.db}.{table}_probe"
            if twin not in self.probe_tables:
                self.ch.command(f"CREATE TABLE IF NOT EXISTS {twin} AS {self.db}.{table} ENGINE = Null")
                self.probe_tables.add(twin)
            self.insert(f"{table}_probe", columns, rows)

    async def holds(self) -> dict[str, Hold]:
        rows = await self.run(self.ch.query, f"""
            SELECT tenant_id, argMax(partition, at) AS p, argMax(record_offset, at) AS o, argMax(chain_seq, at) AS seq,
                   argMax(reason, at) AS why, argMax(state, at) AS state, argMax(held_at, at) AS since
            FROM {self.db}.held GROUP BY tenant_id HAVING state != 'released'""")
        return {r["tenant_id"]: Hold(r["tenant_id"], r["p"], r["o"], r["seq"], r["why"], r["since"], r["state"] == "resume")
                for r in rows}

    async def request_resume(self, tenant_id: str) -> bool:
        hold = (await self.holds()).get(tenant_id)
        if hold is None:
            return False
        now = datetime.now(timezone.utc)
        await self.run(self.ch.insert, f"{self.db}.held", HELD_COLUMNS,
                       [(tenant_id, hold.partition, hold.offset, hold.chain_seq, hold.reason, "resume", hold.held_at, now)])
        return True

    def insert(self, table: str, columns: list[str], rows: list[tuple]) -> None:
        """Insert into a table of this generation, naming the column types (no DESCRIBE per insert)."""
        if rows:
            name = f"{self.db}.{table}"
            if name not in self.column_types:
                self.column_types[name] = {r["name"]: r["type"] for r in self.ch.query(f"DESCRIBE TABLE {name}")}
            self.ch.insert(name, columns, rows, [self.column_types[name][c] for c in columns])

    async def record_failure(self, reason: str | None) -> None:
        await self.run(self.ch.insert, f"{self.db}.status", ["failure", "at"], [(reason, datetime.now(timezone.utc))])

    async def failure(self) -> str | None:
        # Not argMax(failure, at): aggregates skip NULLs, so the NULL that clears a failure would never win.
        rows = await self.run(self.ch.query, f"SELECT failure AS f FROM {self.db}.status ORDER BY at DESC LIMIT 1")
        return rows[0]["f"] if rows else None

    def remove(self, sweep: Sweep) -> None:
        """Record how many rows of each swept table the sweep's runs have, then delete them."""
        params = {"t": sweep.tenant_id, "runs": sweep.run_ids}
        for table in self.swept_tables:
            self.ch.command(f"INSERT INTO {self.db}.removals SELECT {{t:String}}, {{seq:UInt64}}, {{cls:String}}, "
                            f"{{table:String}}, count(), parseDateTime64BestEffort({{at:String}}, 6, 'UTC') "
                            f"FROM {self.db}.{table} FINAL WHERE {SWEPT_ROWS}",
                            {**params, "seq": sweep.chain_seq, "cls": sweep.record_class, "table": table,
                             "at": sweep.swept_at})
            if sweep.run_ids:
                self.ch.command(f"DELETE FROM {self.db}.{table} WHERE {SWEPT_ROWS} "
                                "SETTINGS lightweight_deletes_sync = 2", params)
        self.forget(sweep)

    def forget(self, sweep: Sweep) -> None:
        """Drop what `known` remembers of the swept families, if a subclass remembers any."""

    async def removals(self, tenant_id: str) -> list[Removal]:
        """What retention sweeps removed from this read model for a tenant, sweep by sweep, table by table."""
        rows = await self.run(self.ch.query,
                              f"SELECT tenant_id, chain_seq, record_class, table_name, rows, swept_at "
                              f"FROM {self.db}.removals FINAL WHERE tenant_id = {{t:String}} "
                              "ORDER BY chain_seq, table_name", {"t": tenant_id})
        return [Removal(r["tenant_id"], r["chain_seq"], r["record_class"], r["table_name"], r["rows"], r["swept_at"])
                for r in rows]

    def rows(self, envelopes: list[Envelope]) -> dict[str, tuple[list[str], list[tuple]]]:
        """Return, per table, the columns and rows this batch adds."""
        raise NotImplementedError
