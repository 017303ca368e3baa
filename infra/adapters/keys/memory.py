"""The in-memory twin of the data-key store, for unit tests; it passes the same contract as PostgreSQL.

Rows live in a `KeyRows` that several stores may share, as processes share a table. The twin keeps
what the contract relies on: rows hold only wrapped keys and the KEK id that wrapped them, a shred
removes the rows, a rotation batch is all or nothing, and `key_for` yields between its read and its
insert (as a database round trip would), so racing callers really race and the insert must settle it.
"""
import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping

from infra.adapters.keys.cipher import new_data_key
from infra.adapters.keys.port import DataKey, KeyStore, check_scope, unique_ids


@dataclass
class Row:
    subject: str
    key_id: str
    wrapped: bytes
    kek_id: str
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class KeyRows:
    """The twin's table: (tenant_id, key_id) -> Row, and the unique (tenant_id, subject) -> key_id."""
    by_id: dict[tuple[str, str], Row] = field(default_factory=dict)
    by_subject: dict[tuple[str, str], str] = field(default_factory=dict)


class MemoryKeyStore(KeyStore):
    def __init__(self, keks: Mapping[str, bytes], current_kek_id: str, rows: KeyRows | None = None):
        super().__init__(keks, current_kek_id)
        self.rows = rows if rows is not None else KeyRows()

    async def key_for(self, tenant_id: str, subject: str) -> tuple[str, bytes]:
        check_scope(tenant_id, subject)
        row = self.current(tenant_id, subject)
        if row is None:
            key_id, (kek_id, wrapped) = f"dk_{uuid.uuid4().hex}", self.wrap(new_data_key())
            await asyncio.sleep(0)  # the round trip between reading and inserting, where a racer can insert first
            existing = self.rows.by_subject.setdefault((tenant_id, subject), key_id)  # ON CONFLICT DO NOTHING
            if existing == key_id:
                self.rows.by_id[(tenant_id, key_id)] = Row(subject, key_id, wrapped, kek_id)
            row = self.current(tenant_id, subject)
        return row.key_id, self.unwrap(row.kek_id, row.wrapped)

    def current(self, tenant_id: str, subject: str) -> Row | None:
        key_id = self.rows.by_subject.get((tenant_id, subject))
        return None if key_id is None else self.rows.by_id[(tenant_id, key_id)]

    async def key_entries(self, tenant_id: str, key_ids: Iterable[str]) -> dict[str, DataKey]:
        check_scope(tenant_id)
        found = [self.rows.by_id[(tenant_id, k)] for k in unique_ids(key_ids) if (tenant_id, k) in self.rows.by_id]
        return {row.key_id: DataKey(row.subject, self.unwrap(row.kek_id, row.wrapped)) for row in found}

    async def subject_keys(self, tenant_id: str, subject: str) -> list[str]:
        check_scope(tenant_id, subject)
        return sorted(k for (t, k), row in self.rows.by_id.items() if t == tenant_id and row.subject == subject)

    async def shred(self, tenant_id: str, subject: str) -> list[str]:
        ids = await self.subject_keys(tenant_id, subject)
        for key_id in ids:
            del self.rows.by_id[(tenant_id, key_id)]
        self.rows.by_subject.pop((tenant_id, subject), None)
        return ids

    async def forget(self, tenant_id: str, key_ids: Iterable[str]) -> list[str]:
        gone = sorted(k for k in set(key_ids) if (tenant_id, k) in self.rows.by_id)
        for key_id in gone:
            del self.rows.by_id[(tenant_id, key_id)]
        for at, key_id in list(self.rows.by_subject.items()):
            if at[0] == tenant_id and key_id in gone:
                del self.rows.by_subject[at]
        return gone

    async def rewrap_batch(self, kek_id: str, size: int) -> int:
        batch = sorted((t, k) for (t, k), row in self.rows.by_id.items() if row.kek_id != kek_id)[:size]
        rewrapped = {}
        for at in batch:  # all of the batch is rewrapped before any of it is stored, as in one transaction
            row = self.rows.by_id[at]
            rewrapped[at] = self.wrap(self.unwrap(row.kek_id, row.wrapped), kek_id)
        for at, (new_kek_id, wrapped) in rewrapped.items():
            self.rows.by_id[at].kek_id, self.rows.by_id[at].wrapped = new_kek_id, wrapped
        return len(rewrapped)

    async def kek_usage(self) -> dict[str, int]:
        usage: dict[str, int] = {}
        for row in self.rows.by_id.values():
            usage[row.kek_id] = usage.get(row.kek_id, 0) + 1
        return usage
