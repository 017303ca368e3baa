"""Derived snapshots of a partition's fold, so a successor replays only the log after them (docs/adr/0012).

A snapshot is the tenant ledgers of one partition (chain heads, aggregates, idempotency records,
timers, step owners, run families, call windows, Merkle tree) as of a point in the log: the offset
of the last event it folded and that event's hash, and the same for the last reply. It is taken by
the owner under the partition's lock, so between transactions, when every event it holds is
committed; and only when the log's last event is exactly the head of the ledger that appended it.

A successor trusts none of it over the log: it loads a snapshot only if its MAC verifies (a key
derived from the processor's signing key, so a store that can be written cannot make a processor
unpickle what it did not write), it was made by this code (a digest of domain/ and schemas/), and
the log still holds, at the named offsets, an event with the named hash and a reply with the named
digest. Anything else, and the partition is replayed from offset 0, as if there were no snapshot.
"""
import asyncio
import dataclasses
import functools
import hashlib
import hmac
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.ledger import TenantLedger

FORMAT = 1
SETTINGS = ("tenant_id", "rules", "signer", "clock")  # given by the partition's owner, not folded from the log
FOLDED = tuple(f.name for f in dataclasses.fields(TenantLedger) if f.name not in SETTINGS)  # a new field is folded too
CODE = ("domain", "schemas")


@functools.cache
def code_digest() -> str:
    """SHA-256 over the source of the code that folds: a snapshot of another fold is not this one's."""
    root, digest = Path(__file__).resolve().parent.parent, hashlib.sha256(f"format {FORMAT}".encode())
    for path in sorted(p for d in CODE for p in (root / d).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def mac_key(seed: bytes) -> bytes:
    return hashlib.sha256(b"runledger fold snapshot mac\0" + seed).digest()


@dataclass(frozen=True)
class Snapshot:
    partition: int
    events_offset: int  # offset of the last event folded in; -1 for none
    event_hash: str     # that event's hash ("" for none)
    replies_offset: int  # offset of the last reply folded in; -1 for none
    reply_digest: str   # SHA-256 of that reply record's value ("" for none)
    events: int         # events folded in, all tenants together
    code: str
    body: bytes
    mac: str

    def signed_part(self) -> bytes:
        head = (f"{self.partition}|{self.events_offset}|{self.event_hash}|{self.replies_offset}|"
                f"{self.reply_digest}|{self.events}|{self.code}|").encode()
        return head + hashlib.sha256(self.body).digest()

    def sealed(self, key: bytes) -> "Snapshot":
        return Snapshot(**{**vars(self), "mac": hmac.new(key, self.signed_part(), "sha256").hexdigest()})

    def verifies(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, hmac.new(key, self.signed_part(), "sha256").hexdigest())


class SnapshotStore(ABC):
    """Where a partition's latest snapshot is kept; a store that fails only costs a full replay."""

    @abstractmethod
    async def load(self, scope: str, partition: int) -> Snapshot | None:
        """Return the partition's latest snapshot, or None."""

    @abstractmethod
    async def save(self, scope: str, snapshot: Snapshot) -> None:
        """Replace the partition's snapshot by this one, atomically (a crash leaves the old one or the new)."""


class MemorySnapshots(SnapshotStore):
    def __init__(self) -> None:
        self.kept: dict[tuple[str, int], Snapshot] = {}

    async def load(self, scope: str, partition: int) -> Snapshot | None:
        return self.kept.get((scope, partition))

    async def save(self, scope: str, snapshot: Snapshot) -> None:
        self.kept[(scope, snapshot.partition)] = snapshot


def folded(ledger: TenantLedger) -> dict[str, Any]:
    return {name: getattr(ledger, name) for name in FOLDED}


async def capture(tenants: dict[str, TenantLedger], partition: int, events_offset: int, event_hash: str,
                  replies_offset: int, reply_digest: str, key: bytes) -> Snapshot:
    """Pickle the tenants one at a time, letting the loop run between them (the caller holds the partition)."""
    pieces = []
    for tenant_id, ledger in list(tenants.items()):
        pieces.append((tenant_id, pickle.dumps(folded(ledger), protocol=pickle.HIGHEST_PROTOCOL)))
        await asyncio.sleep(0)
    events = sum(ledger.chain.head_seq for ledger in tenants.values())
    body = pickle.dumps(pieces, protocol=pickle.HIGHEST_PROTOCOL)
    return Snapshot(partition, events_offset, event_hash, replies_offset, reply_digest, events, code_digest(), body,
                    "").sealed(key)


def unsealed(snapshot: Snapshot | None, partition: int, key: bytes) -> Snapshot | None:
    """The snapshot if it is this partition's, made by this code and untouched since; else None."""
    if snapshot is None or snapshot.partition != partition or snapshot.code != code_digest():
        return None
    return snapshot if snapshot.verifies(key) else None


async def restore(snapshot: Snapshot, tenant) -> dict[str, TenantLedger]:
    """The tenant ledgers the snapshot holds; `tenant(id)` makes an empty ledger with the partition's settings."""
    ledgers = {}
    for tenant_id, piece in pickle.loads(snapshot.body):
        ledger = tenant(tenant_id)
        for name, value in pickle.loads(piece).items():
            setattr(ledger, name, value)
        ledgers[tenant_id] = ledger
        await asyncio.sleep(0)
    return ledgers


def reply_digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()
