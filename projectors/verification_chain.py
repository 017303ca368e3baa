"""The chains a verification compares read models with: read from the events topic, spooled to disk.

Each partition is read once (and again from where it stopped, when a check needs events appended
since), and each record goes to the spool file of the tenant its key names, as `runledger verify`
reads a chain. A tenant's records are verified as they arrive (hashes, links, gapless chain_seq):
`size` is its verified prefix, `broken` says where and why it stops if it does. Checks replay a
spool as often as they need (records for a shadow rebuild, envelopes for expected rows) without
holding a chain in memory; what stays in memory is an offset per event.
"""
import bisect
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from infra.adapters.eventlog import EventLog, Record, TopicPartition
from infra.adapters.kafka import partition_for
from projectors.admit import decoded
from schemas.chain import ChainVerifier

Progress = Callable[[str, int, int | None], None]  # (what, done, total)
FRAME = struct.Struct(">QI")  # offset, value length (-1 as 0xFFFFFFFF: no value)
NO_VALUE = 0xFFFFFFFF
FLUSH_BYTES = 8 << 20


@dataclass
class TenantChain:
    tenant_id: str
    partition: int
    path: Path
    verifier: ChainVerifier
    offsets: list[int] = field(default_factory=list)  # offset of chain_seq i + 1, verified events only
    broken: tuple[int, str] | None = None  # (chain_seq, why) of the first record that does not continue it
    records: int = 0

    @property
    def size(self) -> int:
        return len(self.offsets)

    def take(self, record: Record) -> bytes:
        """Verify the record as the chain's next; return its frame for the spool."""
        value = record.value
        self.records += 1
        if self.broken is None:
            env, problem = decoded(value)
            problem = problem or self.verifier.problem_with(env)
            if problem:
                where = f"partition {self.partition} offset {record.offset}"
                self.broken = (self.verifier.head_seq + 1, f"{where}: {problem}")
            else:
                self.verifier.accept(env)
                self.offsets.append(record.offset)
        return FRAME.pack(record.offset, NO_VALUE if value is None else len(value)) + (value or b"")

    def applied_before(self, offset: int) -> int:
        """The chain_seq a model whose partition position is `offset` must have applied (0: none)."""
        return bisect.bisect_left(self.offsets, offset)

    def replay(self, topic: str) -> Iterator[Record]:
        """Every spooled record of the tenant, verified or not, in log order."""
        key = self.tenant_id.encode()
        with open(self.path, "rb") as spool:
            for _ in range(self.records):
                offset, length = FRAME.unpack(spool.read(FRAME.size))
                value = None if length == NO_VALUE else spool.read(length)
                yield Record(topic, self.partition, offset, key, value)

    def envelopes(self, topic: str, upto: int | None = None) -> Iterator[dict]:
        """The verified events, chain_seq 1 to `upto` (default: all of them), decoded."""
        last = self.size if upto is None else min(upto, self.size)
        for seq, record in enumerate(self.replay(topic), 1):
            if seq > last:
                return
            yield decoded(record.value)[0]


class Chains:
    """The chains of the named tenants (None: every tenant on the topic), kept up to the log end on demand."""

    def __init__(self, log_: EventLog, topic: str, tenants: list[str] | None, directory: str | None = None):
        self.log_, self.topic = log_, topic
        self.wanted = None if tenants is None else list(dict.fromkeys(tenants))
        self.work = tempfile.TemporaryDirectory(prefix="runledger-verify-", dir=directory)
        self.chains: dict[str, TenantChain] = {}
        self.read_to: dict[int, int] = {}  # partition → next offset to read

    def close(self) -> None:
        self.work.cleanup()

    async def partitions(self) -> list[int]:
        found = await self.log_.partitions(self.topic)
        if not found:
            raise LookupError(f"topic {self.topic!r} does not exist; check RUNLEDGER_TOPIC_PREFIX")
        if self.wanted is None:
            return sorted(found)
        return sorted({partition_for(t, len(found)) for t in self.wanted})

    def tenants(self) -> list[str]:
        return sorted(self.chains) if self.wanted is None else list(self.wanted)

    def get(self, tenant_id: str) -> TenantChain | None:
        return self.chains.get(tenant_id)

    async def extend(self, progress: Progress | None = None) -> None:
        """Read every partition of interest from where the last read stopped to its end now."""
        reader = self.log_.reader()
        await reader.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in await self.partitions()]
            ends = await reader.end_offsets(tps)
            for tp in tps:
                await self.read(reader, tp, ends[tp], progress)
        finally:
            await reader.stop()

    async def read(self, reader, tp: TopicPartition, end: int, progress: Progress | None) -> None:
        start, what = self.read_to.get(tp.partition, 0), f"reading {tp.topic}[{tp.partition}]"
        wanted = None if self.wanted is None else {t.encode() for t in self.wanted}
        frames: dict[str, list[bytes]] = {}
        buffered = 0
        async for record in reader.read(tp, start, end):
            if record.key and (wanted is None or record.key in wanted):
                tenant = record.key.decode(errors="replace")
                chain = self.chains.get(tenant) or self.open(tenant, tp.partition)
                frame = chain.take(record)
                frames.setdefault(tenant, []).append(frame)
                buffered += len(frame)
                if buffered > FLUSH_BYTES:
                    buffered = self.flush(frames)
            if progress and (record.offset - start) % 1000 == 0:
                progress(what, record.offset + 1 - start, end - start)
        self.flush(frames)
        self.read_to[tp.partition] = max(start, end)
        if progress:
            progress(what, end - start, end - start)

    def flush(self, frames: dict[str, list[bytes]]) -> int:
        """Append the buffered frames to their spools (a file open only while written: tenants may be many)."""
        for tenant, pending in frames.items():
            with open(self.chains[tenant].path, "ab") as spool:
                spool.write(b"".join(pending))
        frames.clear()
        return 0

    def open(self, tenant_id: str, partition: int) -> TenantChain:
        path = Path(self.work.name) / f"{len(self.chains)}.spool"
        chain = self.chains[tenant_id] = TenantChain(tenant_id, partition, path, ChainVerifier(tenant_id))
        return chain
