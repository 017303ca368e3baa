"""The archive projection: each tenant's chain as static C2SP tlog-tiles files in a directory, servable read-only
by any web server and checked offline by `runledger verify-archive` (schemas/tiles_verify.py; docs/archive.md).

Under the archive root (RUNLEDGER_ARCHIVE_DIR):

    <tenant>/checkpoint, <tenant>/tile/…, <tenant>/events/…   public: the layout of schemas/tiles.py
    .runledger/owners/<tenant>                               the topic prefix (deployment) that writes <tenant>/
    .runledger/<prefix>/partitions/<p>.json                  the position, written last: per partition its next
                                                             offset, each tenant's archived size, head and latest
                                                             checkpoint size, and the held tenants
    .runledger/<prefix>/open/<tenant>.jsonl                  the sidecar lines of the tenant's open (not yet full)
                                                             bundle, appended as events arrive
    .runledger/<prefix>/ranges/<tenant>/<M>.json             the recorded_at span of each full sidecar bundle, so a
                                                             sweep reads only the bundles its runs can be in
    .runledger/<prefix>/resume/<tenant>, failure, .runledger/tmp/

What is public. Full tiles, entry bundles and sidecar bundles are written as each fills (256 events), and for
every `checkpoint.signed` the partial tiles and bundles of its size (tlog-tiles: a log serves the partial tiles
of each checkpointed size until the full tile exists; then they are deleted), then `checkpoint`, the latest
note as recorded on the chain. Events after the latest checkpoint that do not fill a bundle wait in the
private journal; they are not covered by any signed tree head yet, and a client may not ask for them.

Crash safety and exactly-once effect. Every file is written to .runledger/tmp, fsynced and renamed over its
name (os.replace); the directories are fsynced before the position is, and the position of a partition is one
file written last. A restart reads the position and replays from there: the public files are a function of
the events (full tiles are immutable: one that exists with other bytes is an ArchiveConflict, which holds the
tenant), so replaying them writes what is there already, and events at or below a tenant's archived size
are passed over. Nothing is written out of order: entries before the sidecar before the tile they make, the
tiles of a level before the level above, partial tiles before the checkpoint that needs them.

Retention. A `retention.swept` that names the `archive` store (domain/retention.py STORES) replaces the
sidecar line of every event of the runs it names by a tombstone naming the sweep's chain_seq: the entries
and tiles stay, so every later proof and checkpoint still verifies; a tombstone is verified by its hash.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from projectors.archive_files import CACHED_TENANTS, STALE_TMP_S, STATE_DIR, Files, now_iso
from projectors.archive_tree import Tree
from projectors.base import Batch, Envelope, Hold, Position, Projection
from schemas.bundle import jcs
from schemas.tiles import TENANT, WIDTH, events_path


class Session:
    """One apply (or probe): the files it writes through and the trees of the tenants it touches."""

    def __init__(self, archive: ArchiveProjection, dry: bool):
        self.archive = archive
        self.files = Files(archive.tmp, dry)
        self.trees: dict[str, Tree] = {}

    def tree(self, tenant: str) -> Tree:
        if tenant not in self.trees:
            self.trees[tenant] = self.archive.tree_for(tenant, self.files)
        return self.trees[tenant]


class ArchiveProjection(Projection):
    """The archive as a projection: its position is the partition files, written after every file they cover.

    One generation: the archive rebuilds in place (docs/archive.md): remove `.runledger/<prefix>/partitions`
    and restart, and the replay from offset 0 rewrites nothing that is right and holds a tenant at any full
    tile that is not."""

    name = "archive"
    local = True  # files of this process's own (a replica reads every partition: docs/scaling.md)
    linger_ms = 200   # fewer, bigger polls: each costs a few fsyncs per tenant

    def __init__(self, root: str | Path, topic_prefix: str = "ledger"):
        self.root = Path(root)
        self.prefix = topic_prefix
        self.private = self.root / STATE_DIR / topic_prefix
        self.owners = self.root / STATE_DIR / "owners"
        self.tmp = self.root / STATE_DIR / "tmp"
        self._partitions: dict[int, dict[str, Any]] = {}
        self._tenants: dict[str, int] = {}
        self._cache: OrderedDict[str, Tree] = OrderedDict()
        self._lock = threading.Lock()   # a re-read of the position never lands in the middle of an apply

    # -- files of the bookkeeping ----------------------------------------------------------------------------
    def partition_file(self, partition: int) -> Path:
        return self.private / "partitions" / f"{partition}.json"

    def resume_file(self, tenant: str) -> Path:
        return self.private / "resume" / tenant

    def _load(self) -> None:
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        partitions = {}
        for path in sorted((self.private / "partitions").glob("*.json")):
            state = json.loads(path.read_bytes())
            partitions[state["partition"]] = state
        self._partitions = partitions
        self._tenants = {t: p for p, s in partitions.items() for t in s["tenants"]}

    def _open(self) -> ArchiveProjection:
        for d in (self.private / "partitions", self.private / "resume", self.private / "open",
                  self.private / "ranges", self.owners, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():   # a crashed writer's; a live one's are milliseconds old
            try:
                if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                    stale.unlink()
            except FileNotFoundError:
                pass
        self._reload()
        return self

    # -- the Projection port -----------------------------------------------------------------------------------
    async def open(self) -> ArchiveProjection:
        return await asyncio.to_thread(self._open)

    async def positions(self) -> dict[int, Position]:
        await asyncio.to_thread(self._load)
        return {p: Position(p, s["next_offset"], s["last_recorded_at"],
                            datetime.fromisoformat(s["updated_at"]) if s["updated_at"] else None)
                for p, s in self._partitions.items() if s["next_offset"] is not None}

    async def head(self, tenant_id: str) -> tuple[int, str]:
        state = self.committed(tenant_id)
        return (state["size"], state["hash"]) if state["size"] else self.genesis

    def committed(self, tenant: str) -> dict[str, Any]:
        partition = self._tenants.get(tenant)
        if partition is None:
            return {"size": 0, "hash": self.genesis[1], "checkpoint": 0}
        return self._partitions[partition]["tenants"][tenant]

    async def apply(self, batches: list[Batch], holds: Sequence[Hold] = (), released: str | None = None) -> None:
        await asyncio.to_thread(self._apply, batches, list(holds), released)

    async def probe(self, envelopes: list[Envelope]) -> None:
        await asyncio.to_thread(self._probe, envelopes)

    async def holds(self) -> dict[str, Hold]:
        await asyncio.to_thread(self._load)
        return {tenant: Hold(tenant, p, h["offset"], h["chain_seq"], h["reason"],
                             datetime.fromisoformat(h["held_at"]), self.resume_file(tenant).exists())
                for p, s in self._partitions.items() for tenant, h in s["held"].items()}

    async def request_resume(self, tenant_id: str) -> bool:
        if tenant_id not in await self.holds():
            return False
        await asyncio.to_thread(self._mark_resume, tenant_id)
        return True

    def _mark_resume(self, tenant: str) -> None:
        files = Files(self.tmp)
        files.write(self.resume_file(tenant), b"")
        files.sync()

    async def record_failure(self, reason: str | None) -> None:
        def record() -> None:
            files = Files(self.tmp)
            if reason is None:
                files.remove(self.private / "failure")
            else:
                files.write(self.private / "failure", reason.encode())
            files.sync()
        await asyncio.to_thread(record)

    async def failure(self) -> str | None:
        data = await asyncio.to_thread(Files(self.tmp).read, self.private / "failure")
        return data.decode() if data is not None else None

    async def live_generation(self) -> int:
        return 1

    async def fresh_generation(self, generation: int) -> Projection:
        raise NotImplementedError(
            "the archive has one generation, its directory: to rebuild it, stop the projectors, remove "
            f"{self.private / 'partitions'} and start them again; the replay from offset 0 rewrites nothing that is "
            "right, and holds any tenant whose files are not")

    async def go_live(self) -> None:
        return None

    # -- applying ------------------------------------------------------------------------------------------------
    def tree_for(self, tenant: str, files: Files) -> Tree:
        if not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
            raise ValueError(f"tenant id {tenant!r} cannot name an archive directory ({TENANT.pattern})")
        state = self.committed(tenant)
        cached = self._cache.get(tenant)
        if cached is not None and (cached.size, cached.head) == (state["size"], state["hash"]):
            tree = cached.copy()
            tree.files = files
            return tree
        tree = Tree(self, tenant, state["size"], state["hash"], state["checkpoint"])
        tree.journal = state["size"] & (WIDTH - 1)
        return tree.load(files)

    def write(self, session: Session, envelopes: list[Envelope]) -> None:
        """Fold a poll's events into the tenants' archives (the row write; tests fail it mid-way)."""
        for env in envelopes:
            session.tree(env["tenant_id"]).add(env)

    def _probe(self, envelopes: list[Envelope]) -> None:
        with self._lock:
            session = Session(self, dry=True)
            self.write(session, envelopes)
            for tree in session.trees.values():
                tree.finish()

    def _apply(self, batches: list[Batch], holds: list[Hold], released: str | None) -> None:
        with self._lock:
            session = Session(self, dry=False)
            self.write(session, [env for batch in batches for env in batch.envelopes])
            for tree in session.trees.values():
                tree.finish()
            session.files.sync()
            self._commit(session, batches, holds, released)

    def _commit(self, session: Session, batches: list[Batch], holds: list[Hold], released: str | None) -> None:
        """Write each touched partition's position (one file each, last), then forget resume requests answered."""
        changed: dict[int, dict[str, Any]] = {}

        def state(p: int) -> dict[str, Any]:
            if p not in changed:
                old = self._partitions.get(p) or {"partition": p, "next_offset": None, "last_recorded_at": None,
                                                  "updated_at": None, "tenants": {}, "held": {}}
                changed[p] = {**old, "tenants": dict(old["tenants"]), "held": dict(old["held"])}
            return changed[p]

        partition_of = {env["tenant_id"]: b.partition for b in batches for env in b.envelopes}
        for tenant, tree in session.trees.items():
            p = partition_of[tenant]
            if (before := self._tenants.get(tenant)) is not None and before != p:
                state(before)["tenants"].pop(tenant, None)
            state(p)["tenants"][tenant] = tree.summary()
        now = now_iso()
        for batch in batches:
            if batch.next_offset is not None:
                s = state(batch.partition)
                s["next_offset"], s["updated_at"] = batch.next_offset, now
                if batch.envelopes:
                    s["last_recorded_at"] = batch.envelopes[-1]["recorded_at"]
        for hold in holds:
            state(hold.partition)["held"][hold.tenant_id] = {"offset": hold.offset, "chain_seq": hold.chain_seq,
                                                             "reason": hold.reason, "held_at": now}
        if released is not None:
            for p, s in self._partitions.items():
                if released in s["held"]:
                    state(p)["held"].pop(released)
        files = session.files
        for p, s in sorted(changed.items()):
            files.write(self.partition_file(p), jcs(s) + b"\n")
        files.sync()
        self._partitions.update(changed)
        self._tenants = {t: p for p, s in self._partitions.items() for t in s["tenants"]}
        for tenant in [h.tenant_id for h in holds] + ([released] if released is not None else []):
            files.remove(self.resume_file(tenant))
        files.sync()
        for tenant, tree in session.trees.items():
            tree.files, tree.disk, tree.committed = None, None, (tree.size, tree.head)  # type: ignore[assignment]
            self._cache[tenant] = tree
            self._cache.move_to_end(tenant)
        while len(self._cache) > CACHED_TENANTS:
            self._cache.popitem(last=False)

    # -- reading back (tests, tools) ---------------------------------------------------------------------------------
    def envelopes(self, tenant: str) -> list[dict[str, Any]]:
        """Every sidecar line of a tenant up to its committed size (tombstones too), in chain order."""
        size = self.committed(tenant)["size"]
        lines: list[bytes] = []
        for n in range(size >> 8):
            lines += (self.root / tenant / events_path(n)).read_bytes().split(b"\n")[:-1]
        if size & (WIDTH - 1):
            journal = (self.private / "open" / f"{tenant}.jsonl").read_bytes().split(b"\n")
            lines += journal[:size & (WIDTH - 1)]
        return [json.loads(line) for line in lines]
