"""Where a fold snapshot meets the log: the point an owner takes one at, and the check a successor makes.

An owner takes a snapshot holding the partition's lock (no transaction of it is open, so everything
it folded is committed), reading the log's last event and last reply: the snapshot is as of them,
and only if that event is the head of its tenant's chain in the fold (else the fold and the log
disagree, and no snapshot is taken). A successor restores one only if the log still has, at those
offsets, that event hash and that reply digest, and the restored fold has that event as its head.
"""
import logging
import time
from typing import Callable

from commands.snapshots import Snapshot, SnapshotStore, capture, mac_key, reply_digest, restore, unsealed
from domain.ledger import TenantLedger
from infra.adapters.eventlog import LogError, PartitionReader, Record, TopicPartition
from schemas.envelope import decode

log = logging.getLogger("runledger.processor")


async def last_record(reader: PartitionReader, tp: TopicPartition, end: int) -> Record | None:
    """The last committed record below `end` (markers and aborted records are not records)."""
    back = 2
    while True:
        start = max(0, end - back)
        found = [r async for r in reader.read(tp, start, end)]
        if found or start == 0:
            return found[-1] if found else None
        back *= 8


async def record_at(reader: PartitionReader, tp: TopicPartition, offset: int) -> Record | None:
    found = [r async for r in reader.read(tp, offset, offset + 1)]
    return found[0] if found and found[0].offset == offset else None


class Snapshotter:
    """Takes an owner's snapshots and restores a successor's fold from one (`store` None: never)."""

    def __init__(self, store: SnapshotStore | None, scope: str, events_topic: str, replies_topic: str,
                 seed: bytes | None, every: int):
        self.store, self.scope, self.every = (store if seed is not None else None), scope, every
        self.events_topic, self.replies_topic = events_topic, replies_topic
        self.key = mac_key(seed) if seed is not None else b""

    def tps(self, partition: int) -> tuple[TopicPartition, TopicPartition]:
        return TopicPartition(self.events_topic, partition), TopicPartition(self.replies_topic, partition)

    def due(self, events_now: int, events_at_last: int) -> bool:
        return self.store is not None and self.every > 0 and events_now - events_at_last >= self.every

    # -- a successor -------------------------------------------------------------------------
    async def resume(self, reader: PartitionReader, partition: int,
                     tenant: Callable[[str], TenantLedger]) -> tuple[dict[str, TenantLedger], int, int, int]:
        """The fold restored from the partition's snapshot and the offsets to replay from: ({}, 0, 0, 0) if none fits.

        The last number is how many events the snapshot holds."""
        if self.store is None:
            return {}, 0, 0, 0
        snapshot = await unsealed(await self.store.load(self.scope, partition), partition, self.key)
        why = "none" if snapshot is None else await self.mismatch(reader, snapshot)
        if why:
            if why != "none":
                log.warning("partition %s: fold snapshot ignored (%s); replaying from offset 0", partition, why)
            return {}, 0, 0, 0
        try:
            ledgers = await restore(snapshot, tenant)
        except Exception as error:  # noqa: BLE001 - a snapshot that cannot be read is no snapshot
            log.warning("partition %s: fold snapshot unreadable (%r); replaying from offset 0", partition, error)
            return {}, 0, 0, 0
        head = self.head_of(ledgers, snapshot)
        if head is not None:
            log.warning("partition %s: fold snapshot ignored (%s); replaying from offset 0", partition, head)
            return {}, 0, 0, 0
        return ledgers, snapshot.events_offset + 1, snapshot.replies_offset + 1, snapshot.events

    async def mismatch(self, reader: PartitionReader, snapshot: Snapshot) -> str | None:
        """Why the log does not hold what the snapshot says it is as of; None when it does."""
        events, replies = self.tps(snapshot.partition)
        if snapshot.events_offset >= 0:
            record = await record_at(reader, events, snapshot.events_offset)
            if record is None or decode(record.value).get("hash") != snapshot.event_hash:
                return f"the log has no event {snapshot.event_hash[:12]}… at offset {snapshot.events_offset}"
        if snapshot.replies_offset >= 0:
            record = await record_at(reader, replies, snapshot.replies_offset)
            if record is None or reply_digest(record.value) != snapshot.reply_digest:
                return f"the log has not that reply at offset {snapshot.replies_offset}"
        return None

    @staticmethod
    def head_of(ledgers: dict[str, TenantLedger], snapshot: Snapshot) -> str | None:
        if snapshot.events_offset < 0:
            return None
        if not any(ledger.chain.head_hash == snapshot.event_hash for ledger in ledgers.values()):
            return "its fold does not end at the event it names"
        return None

    # -- an owner ----------------------------------------------------------------------------
    async def take(self, reader: PartitionReader, partition: int, tenants: dict[str, TenantLedger]) -> Snapshot | None:
        """A snapshot of the fold as of the log's last event and reply; None if the log's last event is not its head.

        The caller holds the partition's lock for the whole call."""
        events, replies = self.tps(partition)
        ends = await reader.end_offsets([events, replies])
        event = await last_record(reader, events, ends[events])
        reply = await last_record(reader, replies, ends[replies])
        event_hash = ""
        if event is not None:
            env = decode(event.value)
            ledger = tenants.get(env["tenant_id"])
            if ledger is None or (ledger.chain.head_seq, ledger.chain.head_hash) != (env["chain_seq"], env["hash"]):
                return None
            event_hash = env["hash"]
        return await capture(tenants, partition, event.offset if event else -1, event_hash,
                             reply.offset if reply else -1, reply_digest(reply.value) if reply else "", self.key)

    async def save(self, snapshot: Snapshot) -> None:
        started = time.perf_counter()
        await self.store.save(self.scope, snapshot)
        log.info("partition %s: fold snapshot of %s events as of offset %s (%s bytes, saved in %.2f s)",
                 snapshot.partition, snapshot.events, snapshot.events_offset, len(snapshot.body),
                 time.perf_counter() - started)


async def safely(what: str, work) -> None:
    """Await a snapshot's work; a failure costs only the snapshot (the log is the record)."""
    try:
        await work
    except (LogError, OSError) as error:
        log.warning("fold snapshot not taken: %s: %r", what, error)
