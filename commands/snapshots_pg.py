"""Fold snapshots in PostgreSQL: one row per (topic prefix, partition), replaced in one transaction.

A connection per call: a takeover loads once and an owner saves once every RUNLEDGER_SNAPSHOT_EVERY
events, too rarely for a pool. Each call is bounded (`timeout_s`): a PostgreSQL that is down or slow
costs a takeover at most that long, and then a full replay, never a failure.
"""
import asyncio
import logging

import psycopg

from commands.snapshots import Snapshot, SnapshotStore

log = logging.getLogger("runledger.processor")

TABLE = "runledger_fold_snapshots"
DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    scope text NOT NULL, partition integer NOT NULL, events_offset bigint NOT NULL, event_hash text NOT NULL,
    replies_offset bigint NOT NULL, reply_digest text NOT NULL, events bigint NOT NULL, code text NOT NULL,
    body bytea NOT NULL, mac text NOT NULL, taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, partition))"""
COLUMNS = "partition, events_offset, event_hash, replies_offset, reply_digest, events, code, body, mac"
DDL_LOCK = 0x72_6C_66_73  # "rlfs": roles starting together create the table once


class PgSnapshots(SnapshotStore):
    def __init__(self, database_url: str, timeout_s: float = 1.0, transfer_timeout_s: float = 30.0):
        self.url, self.timeout_s, self.transfer_timeout_s = database_url, timeout_s, transfer_timeout_s
        self.created = False

    async def connect(self) -> psycopg.AsyncConnection:
        conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(self.url, autocommit=False), self.timeout_s)
        if not self.created:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
                await conn.execute(DDL)
            self.created = True
        return conn

    async def load(self, scope: str, partition: int) -> Snapshot | None:
        try:
            return await asyncio.wait_for(self.fetch(scope, partition), self.transfer_timeout_s)
        except (psycopg.Error, OSError, asyncio.TimeoutError) as error:
            log.warning("partition %s: no fold snapshot (%r); replaying from offset 0", partition, error)
            return None

    async def fetch(self, scope: str, partition: int) -> Snapshot | None:
        async with await self.connect() as conn:
            row = await (await conn.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE scope = %s AND partition = %s",
                                            (scope, partition), binary=True)).fetchone()  # bytea not as hex
        return Snapshot(*row[:7], bytes(row[7]), row[8]) if row else None

    async def save(self, scope: str, snapshot: Snapshot) -> None:
        try:
            await asyncio.wait_for(self.store(scope, snapshot), self.transfer_timeout_s)
        except (psycopg.Error, OSError, asyncio.TimeoutError) as error:
            log.warning("partition %s: fold snapshot not saved (%r); the previous one stays", snapshot.partition,
                        error)

    async def store(self, scope: str, s: Snapshot) -> None:
        async with await self.connect() as conn:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {TABLE} (scope, {COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (scope, partition) DO UPDATE SET events_offset = EXCLUDED.events_offset, "
                    "event_hash = EXCLUDED.event_hash, replies_offset = EXCLUDED.replies_offset, "
                    "reply_digest = EXCLUDED.reply_digest, events = EXCLUDED.events, code = EXCLUDED.code, "
                    "body = EXCLUDED.body, mac = EXCLUDED.mac, taken_at = now()",
                    (scope, s.partition, s.events_offset, s.event_hash, s.replies_offset, s.reply_digest, s.events,
                     s.code, s.body, s.mac))
