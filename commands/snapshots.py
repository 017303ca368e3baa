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
import io
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from commands.heap import bulk
from domain.ledger import TenantLedger

FORMAT = 2  # 2: the fold pickled in slices (capture), one Pickler's memo across them
SLICE = 2000  # dict items per slice: a few ms of pickling each
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

    def signed_part(self, body_digest: bytes | None = None) -> bytes:
        head = (f"{self.partition}|{self.events_offset}|{self.event_hash}|{self.replies_offset}|"
                f"{self.reply_digest}|{self.events}|{self.code}|").encode()
        return head + (body_digest or hashlib.sha256(self.body).digest())

    def sealed(self, key: bytes, body_digest: bytes | None = None) -> "Snapshot":
        return Snapshot(**{**vars(self), "mac": hmac.new(key, self.signed_part(body_digest), "sha256").hexdigest()})

    def verifies(self, key: bytes, body_digest: bytes | None = None) -> bool:
        return hmac.compare_digest(self.mac, hmac.new(key, self.signed_part(body_digest), "sha256").hexdigest())


async def digest_of(body: bytes) -> bytes:
    """SHA-256 of a body on a thread: hashlib lets go of the GIL for it, so the loop runs meanwhile (a 1M-event
    fold is hundreds of MB: a second of hashing)."""
    return await asyncio.to_thread(lambda: hashlib.sha256(body).digest())


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
    """Pickle the tenants' folds a slice at a time, letting the loop run between slices (so heartbeats go on).

    The caller holds the partition, so nothing folded changes meanwhile. One Pickler writes every slice:
    its memo spans them, so an object two fields share is still one object when restored."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    with bulk():  # and what the fold grew by since the last freeze is frozen too (commands/heap.py)
        for tenant_id, ledger in list(tenants.items()):
            pickler.dump(("tenant", tenant_id))
            for name, value in folded(ledger).items():
                for piece in slices((name,), value):
                    pickler.dump(piece)
                    await asyncio.sleep(0)
        pickler.dump(("end",))
    events, body = sum(ledger.chain.head_seq for ledger in tenants.values()), buffer.getvalue()
    return Snapshot(partition, events_offset, event_hash, replies_offset, reply_digest, events, code_digest(),
                    body, "").sealed(key, await digest_of(body))


def slices(path: tuple[str, ...], value: Any, depth: int = 0) -> Iterator[tuple]:
    """A value as pieces of at most SLICE entries: a big dict in item slices, a plain object (pickled as its
    class and __dict__, nothing custom) attribute by attribute, one level down; anything else whole."""
    if type(value) is dict and len(value) > SLICE:
        items = list(value.items())
        for lo in range(0, len(items), SLICE):
            yield ("items", path, items[lo:lo + SLICE])
    elif depth == 0 and plain_object(value):
        yield ("object", path, type(value))
        for attr, attr_value in vars(value).items():
            yield from slices((*path, attr), attr_value, depth + 1)
    else:
        yield ("value", path, value)


def plain_object(value: Any) -> bool:
    cls = type(value)
    return (hasattr(value, "__dict__") and not hasattr(cls, "__slots__") and not hasattr(cls, "__setstate__")
            and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
            and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__)


async def unsealed(snapshot: Snapshot | None, partition: int, key: bytes) -> Snapshot | None:
    """The snapshot if it is this partition's, made by this code and untouched since; else None."""
    if snapshot is None or snapshot.partition != partition or snapshot.code != code_digest():
        return None
    return snapshot if snapshot.verifies(key, await digest_of(snapshot.body)) else None


async def restore(snapshot: Snapshot, tenant) -> dict[str, TenantLedger]:
    """The tenant ledgers the snapshot holds; `tenant(id)` makes an empty ledger with the partition's settings.

    Read a slice at a time, as `capture` wrote them, letting the loop run between slices."""
    unpickler = pickle.Unpickler(io.BytesIO(snapshot.body))
    ledgers: dict[str, TenantLedger] = {}
    with bulk():
        await rebuild_from(unpickler, ledgers, tenant)
    return ledgers


async def rebuild_from(unpickler: pickle.Unpickler, ledgers: dict[str, TenantLedger], tenant) -> None:
    """Fill `ledgers` from the pieces `capture` wrote, in order."""
    fields: dict[str, Any] = {}
    sliced: set[tuple[str, ...]] = set()  # dicts whose first slice came: later slices add to them
    while (piece := unpickler.load())[0] != "end":
        kind, *rest = piece
        if kind == "tenant":
            ledgers[rest[0]] = ledger = tenant(rest[0])
            fields, sliced = vars(ledger), set()
            continue
        path, value = rest
        home = fields
        for step in path[:-1]:
            home = vars(home[step])
        if kind == "items":
            if path not in sliced:
                home[path[-1]] = {}
                sliced.add(path)
            home[path[-1]].update(value)
        elif kind == "object":
            home[path[-1]] = value.__new__(value)
        else:
            home[path[-1]] = value
        await asyncio.sleep(0)
    return ledgers


def reply_digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()
