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
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from domain.retention import MEMBER_TYPES
from projectors.base import Batch, Envelope, Hold, Position, Projection
from projectors.evidence import CHECKPOINT_SIGNED, checkpoint_row
from projectors.removals import governs, sweep_of
from schemas.bundle import jcs
from schemas.merkle import HASH_SIZE, leaf_hash
from schemas.tiles import (CHECKPOINT, STORE, TENANT, TILE_BYTES, WIDTH, encode_bundle, entries_path, events_path,
                           full_tiles, is_tombstone, level_count, subtree_hash, tile_path, tombstone, tree_root,
                           width_at)

STATE_DIR = ".runledger"
CACHED_TENANTS = 1024     # working sets kept between polls (a few KB each); others are read back from the files
STALE_TMP_S = 3600        # a temp file this old is a crashed writer's, never one being written


class ArchiveConflict(ValueError):
    """The files disagree with the chain (another deployment's archive, a changed full tile): holds the tenant."""


class ArchiveCorrupt(ValueError):
    """A file the committed position needs is missing or unreadable: holds the tenant, naming the file."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Files:
    """Crash-safe file writes (temp file, fsync, rename; directories fsynced by sync()), or, `dry`, none at all:
    writes are kept in memory and read back, which is how probe() applies a poll without keeping anything."""

    def __init__(self, tmp: Path, dry: bool = False):
        self.tmp, self.dry = tmp, dry
        self.pending: dict[Path, bytes | None] = {}
        self.dirs: set[Path] = set()

    def read(self, path: Path) -> bytes | None:
        if path in self.pending:
            return self.pending[path]
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def listdir(self, path: Path) -> list[str]:
        try:
            names = set(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        for p, data in self.pending.items():
            if p.parent == path:
                (names.add if data is not None else names.discard)(p.name)
        return sorted(names)

    def size(self, path: Path) -> int | None:
        if path in self.pending:
            data = self.pending[path]
            return None if data is None else len(data)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    def write(self, path: Path, data: bytes) -> None:
        """Write unless the file already holds exactly these bytes (a replay changes nothing)."""
        if self.read(path) != data:
            self._put(path, data)

    def write_once(self, path: Path, data: bytes, rel: str) -> None:
        """An immutable file: written once; the same bytes again is a no-op, other bytes an ArchiveConflict."""
        existing = self.read(path)
        if existing is None:
            self._put(path, data)
        elif existing != data:
            raise ArchiveConflict(f"{rel} exists with other content than this chain gives it; a full tile never "
                                  f"changes (another chain's archive in this directory, or an altered file)")

    def append(self, path: Path, data: bytes) -> None:
        if self.dry:
            self.pending[path] = (self.read(path) or b"") + data
            return
        self._mkdirs(path.parent)
        created = not path.exists()
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if created:
            self.dirs.add(path.parent)

    def remove(self, path: Path) -> None:
        if self.dry:
            self.pending[path] = None
        elif path.exists():
            path.unlink()
            self.dirs.add(path.parent)

    def remove_tree(self, path: Path) -> None:
        if self.dry:
            for dirpath, _, names in os.walk(path):
                for name in names:
                    self.pending[Path(dirpath, name)] = None
            for p in list(self.pending):
                if p.parent == path:
                    self.pending[p] = None
        elif path.exists():
            shutil.rmtree(path)
            self.dirs.add(path.parent)

    def _put(self, path: Path, data: bytes) -> None:
        if self.dry:
            self.pending[path] = data
            return
        self._mkdirs(path.parent)
        tmp = self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.dirs.add(path.parent)

    def _mkdirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            self.dirs.add(d.parent)

    def sync(self) -> None:
        """fsync every directory a name was added to or removed from, so the renames survive a crash."""
        if self.dry:
            return
        for directory in sorted(self.dirs):
            if directory.exists():
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.dirs.clear()


def write_sidecar(files: Files, path: Path, lines: list[bytes], rel: str) -> list[bytes]:
    """Write a sidecar bundle; a line the file already holds as a tombstone stays one (a sweep applied before a
    crash is never undone by the replay that follows it). Returns the lines as written."""
    existing = files.read(path)
    if existing is not None and existing != b"".join(lines):
        old = [line + b"\n" for line in existing.split(b"\n")[:-1]]
        lines = list(lines)
        for i, line in enumerate(lines):
            if i >= len(old) or old[i] == line:
                continue
            was, now = json.loads(old[i]), json.loads(line)
            if was.get("hash") != now.get("hash") or not (is_tombstone(was) or is_tombstone(now)):
                raise ArchiveConflict(f"{rel} line {i + 1} holds another event than this chain's chain_seq "
                                      f"{now.get('chain_seq')}")
            if is_tombstone(was) and not is_tombstone(now):
                lines[i] = old[i]
    files.write(path, b"".join(lines))
    return lines


def published_size(note: bytes | None) -> int:
    """The tree size the published checkpoint note signs (its text's second line); -1 if none or unreadable."""
    lines = (note or b"").split(b"\n")
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else -1


def line_hash(line: bytes) -> bytes:
    return bytes.fromhex(json.loads(line)["hash"])


def run_of(env: dict[str, Any], owner: dict[str, str]) -> str | None:
    """The run whose family an event belongs to, as domain/retention.py Families.run_of decides it."""
    kind, aggregate_id, payload = env["aggregate_type"], env["aggregate_id"], env["payload"]
    if kind == "run":
        return aggregate_id
    if kind in MEMBER_TYPES:
        run_id = owner.get(aggregate_id) or payload.get("run_id")
        if run_id is not None:
            owner.setdefault(aggregate_id, run_id)
        return run_id
    if env["type"] == "budget.cost_recorded":
        return payload.get("run_id")
    return None


class Tree:
    """One tenant's archive being extended: the open tile of each level, the open bundle, and its files."""

    def __init__(self, archive: ArchiveProjection, tenant: str, size: int, head: str, checkpoint: int):
        self.archive, self.tenant = archive, tenant
        self.base = archive.root / tenant
        self.journal_path = archive.private / "open" / f"{tenant}.jsonl"
        self.ranges = archive.private / "ranges" / tenant
        self.size, self.head, self.checkpoint = size, head, checkpoint
        self.committed = (size, head)            # what the position says: what the journal's lines must end at
        self.hashes: list[bytearray] = []        # per level: the hashes of its open tile
        self.entries: list[bytes] = []           # the open bundle's event hashes
        self.journal = 0                         # how many of the open bundle's lines the journal holds
        self.journal_bytes = 0                   # and how long it is then
        self.stale = False                       # whether the journal must be rewritten rather than appended to
        self.disk: list[bytes] | None = None     # those lines, once read
        self.new: list[bytes] = []               # lines added since
        self.note: str | None = None             # a checkpoint note to publish when this poll's files are written
        self.open_pruned = False
        self.files: Files = None  # type: ignore[assignment]

    # -- loading -------------------------------------------------------------------------------------------
    def load(self, files: Files) -> Tree:
        """Read the working set back from the files, at the committed size."""
        self.files = files
        self.check_owner()
        size, width = self.size, self.size & (WIDTH - 1)
        self.hashes = [bytearray() for _ in range(level_count(size))]
        if width:
            self.entries = [line_hash(line) for line in self.open_lines()]
            self.hashes[0] = bytearray(b"".join(leaf_hash(e) for e in self.entries))
        elif size:
            last = self.read_full("entries", 0, (size >> 8) - 1)
            if last[-HASH_SIZE:].hex() != self.head:
                raise ArchiveCorrupt(f"{self.tenant}/{entries_path((size >> 8) - 1)}: its last entry is not "
                                     f"{self.head}, the head the position names")
        for level in range(1, level_count(size)):
            n = full_tiles(level, size)
            self.hashes[level] = bytearray(b"".join(
                subtree_hash(self.read_full("tile", level - 1, n * WIDTH + i)) for i in range(width_at(level, size))))
        return self

    def check_owner(self) -> None:
        marker = self.archive.owners / self.tenant
        owner = self.files.read(marker)
        if owner is None:
            if self.base.exists():
                raise ArchiveConflict(f"{self.base} exists, but no deployment's archive owns it (no {marker}): "
                                      "move it aside, or point RUNLEDGER_ARCHIVE_DIR elsewhere")
            self.files.write(marker, self.archive.prefix.encode())
            self.files.sync()   # the claim is durable before the first file of the tenant is
        elif owner.decode(errors="replace") != self.archive.prefix:
            raise ArchiveConflict(f"{self.base} is the archive of topic prefix {owner.decode(errors='replace')!r}, "
                                  f"not of {self.archive.prefix!r}: one archive directory per deployment")

    def read_full(self, kind: str, level: int, n: int) -> bytes:
        rel = tile_path(level, n) if kind == "tile" else entries_path(n)
        data = self.files.read(self.base / rel)
        if data is None or (kind == "tile" and len(data) != TILE_BYTES):
            raise ArchiveCorrupt(f"{self.tenant}/{rel}: {'missing' if data is None else f'{len(data)} bytes'}, but "
                                 f"the tenant's archived size {self.size} needs the full tile")
        if kind == "entries":
            return b"".join(data[i + 2:i + 2 + HASH_SIZE] for i in range(0, len(data), HASH_SIZE + 2))
        return data

    def open_lines(self) -> list[bytes]:
        """The open bundle's sidecar lines: the committed ones (read once) and those added since."""
        if self.disk is None:
            self.disk = self.committed_lines()
        return self.disk + self.new

    def committed_lines(self) -> list[bytes]:
        """The lines of the open bundle the position covers: the journal's first ones, as a rule.

        A poll that failed after the files and before the position may have appended to the journal (the
        lines after the committed ones are dropped), or filled the bundle, written it to events/ and emptied
        the journal: then the committed lines are the first ones of that sidecar bundle (or of a checkpoint's
        partial one). Whichever holds them is checked: it starts at the bundle's first chain_seq and ends at
        the head the position names."""
        size, head = self.committed
        count, n = size & (WIDTH - 1), size >> 8
        if not count:
            return []
        data = self.files.read(self.journal_path) or b""
        sources = [(self.journal_path, data)]
        for width in [WIDTH] + sorted((int(w) for w in self.files.listdir(self.base / f"{events_path(n)}.p")),
                                      reverse=True):
            if width >= count:
                path = self.base / events_path(n, width)
                sources.append((path, self.files.read(path) or b""))
        def holds_them(lines: list[bytes]) -> bool:
            try:
                return len(lines) == count and json.loads(lines[0])["chain_seq"] == n * WIDTH + 1 \
                    and json.loads(lines[-1])["hash"] == head
            except (ValueError, LookupError, TypeError):
                return False
        for path, data in sources:
            lines = [line + b"\n" for line in data.split(b"\n")[:-1]][:count]
            if holds_them(lines):
                self.journal_bytes = sum(map(len, lines))
                if path != self.journal_path or len(data) != self.journal_bytes:
                    self.stale = True   # not the journal as the position left it: rewrite it, never append to it
                return lines
        raise ArchiveCorrupt(f"{self.journal_path}: tenant {self.tenant}'s position covers chain_seq {n * WIDTH + 1}.."
                             f"{size} of its open bundle, and neither the journal nor {self.tenant}/{events_path(n)} "
                             "holds them")

    def set_open_lines(self, lines: list[bytes]) -> None:
        self.disk, self.new, self.stale = list(lines), [], True

    def copy(self) -> Tree:
        twin = Tree(self.archive, self.tenant, self.size, self.head, self.checkpoint)
        twin.committed = self.committed
        twin.hashes = [bytearray(h) for h in self.hashes]
        twin.entries, twin.journal, twin.journal_bytes = list(self.entries), self.journal, self.journal_bytes
        return twin

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "hash": self.head, "checkpoint": self.checkpoint}

    # -- extending -------------------------------------------------------------------------------------------
    def add(self, env: Envelope) -> None:
        seq = env["chain_seq"]
        if seq <= self.size:
            return   # archived already: a poll delivered again
        if seq != self.size + 1:
            raise ValueError(f"chain_seq {seq} does not follow tenant {self.tenant}'s archived size {self.size}")
        digest = bytes.fromhex(env["hash"])
        if len(digest) != HASH_SIZE:
            raise ValueError(f"chain_seq {seq}: the hash is {len(digest)} bytes, not {HASH_SIZE}")
        self.entries.append(digest)
        self.new.append(jcs(env) + b"\n")
        self.push(0, leaf_hash(digest))
        self.size, self.head = seq, env["hash"]
        if not self.size & (WIDTH - 1):
            self.bundle_full()
        if env["type"] == CHECKPOINT_SIGNED:
            self.signed(env)
        if governs(STORE, env):
            self.prune(env)

    def push(self, level: int, digest: bytes) -> None:
        while len(self.hashes) <= level:
            self.hashes.append(bytearray())
        self.hashes[level] += digest

    def bundle_full(self) -> None:
        """The open bundle has its 256th event: its entries, sidecar, recorded_at span and level-0 tile."""
        n = (self.size >> 8) - 1
        lines = self.open_lines()
        self.files.write_once(self.base / entries_path(n), encode_bundle(self.entries),
                              f"{self.tenant}/{entries_path(n)}")
        lines = write_sidecar(self.files, self.base / events_path(n), lines, f"{self.tenant}/{events_path(n)}")
        self.write_span(n, lines)
        self.tile_full(0, n)
        for rel in (entries_path(n), events_path(n)):
            self.files.remove_tree(self.base / f"{rel}.p")
        self.entries, self.journal = [], 0
        self.set_open_lines([])

    def tile_full(self, level: int, n: int) -> None:
        data = bytes(self.hashes[level])
        self.files.write_once(self.base / tile_path(level, n), data, f"{self.tenant}/{tile_path(level, n)}")
        self.files.remove_tree(self.base / f"{tile_path(level, n)}.p")   # tlog-tiles: partials may go once it is full
        self.hashes[level] = bytearray()
        self.push(level + 1, subtree_hash(data))
        if len(self.hashes[level + 1]) == TILE_BYTES:
            self.tile_full(level + 1, n >> 8)

    def tile(self, level: int, n: int, needed: int) -> bytes:
        """TileNodes' reader: the open tile from memory, a full one from its file."""
        if n == full_tiles(level, self.size):
            return bytes(self.hashes[level]) if level < len(self.hashes) else b""
        return self.read_full("tile", level, n)

    def signed(self, env: Envelope) -> None:
        """A checkpoint: it must sign this chain's root; publish the partial tiles of its size, then it."""
        _, seq, _, size, root, note, _, _ = checkpoint_row(env)
        mine = tree_root(self.tile, size)
        if mine != root:
            raise ArchiveConflict(f"the checkpoint at chain_seq {seq} signs root {root.hex()} for size {size}, but "
                                  f"tenant {self.tenant}'s archived chain has root {mine.hex()} at that size")
        for level in range(level_count(size)):
            width, n = width_at(level, size), full_tiles(level, size)
            if not width or n != full_tiles(level, self.size):
                continue   # no partial tile at that level, or its tile is full by now
            if level == 0:
                rel = entries_path(n, width)
                self.files.write_once(self.base / rel, encode_bundle(self.entries[:width]), f"{self.tenant}/{rel}")
                rel = events_path(n, width)
                write_sidecar(self.files, self.base / rel, self.open_lines()[:width], f"{self.tenant}/{rel}")
            rel = tile_path(level, n, width)
            self.files.write_once(self.base / rel, bytes(self.hashes[level][:width * HASH_SIZE]),
                                  f"{self.tenant}/{rel}")
        if size > self.checkpoint:
            self.note, self.checkpoint = note, size

    # -- retention -------------------------------------------------------------------------------------------
    def prune(self, env: Envelope) -> None:
        """Tombstone every sidecar line of the runs a sweep removed; the entries and tiles stay."""
        sweep = sweep_of(env)
        runs = set(sweep.run_ids)
        if not runs:
            return
        payload, owner = env["payload"], {}
        start, end = payload.get("recorded_from"), payload.get("recorded_to")
        n_open = self.size >> 8
        for n in self.candidates(n_open, start, end):
            rel = events_path(n)
            data = self.files.read(self.base / rel)
            if data is None:
                raise ArchiveCorrupt(f"{self.tenant}/{rel}: missing, but the archived size {self.size} needs it")
            lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
            if self.pruned(lines, n, runs, owner, sweep.chain_seq):
                lines = write_sidecar(self.files, self.base / rel, lines, f"{self.tenant}/{rel}")
                for width in self.files.listdir(self.base / f"{rel}.p"):
                    write_sidecar(self.files, self.base / events_path(n, int(width)), lines[:int(width)],
                                  f"{self.tenant}/{events_path(n, int(width))}")
                self.write_span(n, lines)
        lines = self.open_lines()
        if self.pruned(lines, n_open, runs, owner, sweep.chain_seq):
            self.set_open_lines(lines)
            self.open_pruned = True

    @staticmethod
    def pruned(lines: list[bytes], n: int, runs: set[str], owner: dict[str, str], swept_by: int) -> bool:
        changed = False
        for i, line in enumerate(lines):
            value = json.loads(line)
            if not is_tombstone(value) and run_of(value, owner) in runs:
                lines[i] = tombstone(n * WIDTH + i + 1, value["hash"], swept_by)
                changed = True
        return changed

    def candidates(self, n_open: int, start: Any, end: Any) -> Iterator[int]:
        """The full bundles a sweep's runs can have events in: those whose recorded_at span meets its own."""
        known = isinstance(start, str) and isinstance(end, str)
        for chunk in range((n_open + WIDTH - 1) // WIDTH):
            spans = self.spans(chunk) if known else {}
            for n in range(chunk * WIDTH, min(n_open, (chunk + 1) * WIDTH)):
                span = spans.get(str(n))
                if span is None or (span and span[0] <= end and span[1] >= start):
                    yield n

    def spans(self, chunk: int) -> dict[str, list[str]]:
        data = self.files.read(self.ranges / f"{chunk}.json")
        return json.loads(data) if data else {}

    def write_span(self, n: int, lines: list[bytes]) -> None:
        """Note the bundle's recorded_at span ([] once every line is a tombstone: no sweep needs to read it)."""
        times = [v["recorded_at"] for v in map(json.loads, lines) if not is_tombstone(v)]
        spans = self.spans(n >> 8)
        spans[str(n)] = [min(times), max(times)] if times else []
        self.files.write(self.ranges / f"{n >> 8}.json", jcs(spans) + b"\n")

    # -- the end of a poll -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """Write what waits for the poll's end: the journal, the open bundle's pruned partials, the checkpoint."""
        if self.new and not self.stale and (self.files.size(self.journal_path) or 0) != self.journal_bytes:
            self.open_lines()   # the journal is not as the position left it (a crashed poll appended): rewrite it
            self.stale = True
        if self.stale:
            lines = self.open_lines()
            data = b"".join(lines)
            self.files.sync()   # the sidecar bundle that now holds the journal's committed lines is durable first
            self.files.write(self.journal_path, data)
            self.journal, self.journal_bytes, self.disk, self.new, self.stale = len(lines), len(data), lines, [], False
        elif self.new:
            data = b"".join(self.new)
            self.files.append(self.journal_path, data)
            self.journal, self.journal_bytes = self.journal + len(self.new), self.journal_bytes + len(data)
            self.disk = self.disk + self.new if self.disk is not None else None
            self.new = []
        if self.open_pruned:
            n, lines = self.size >> 8, self.open_lines()
            for width in self.files.listdir(self.base / f"{events_path(n)}.p"):
                rel = events_path(n, int(width))
                write_sidecar(self.files, self.base / rel, lines[:int(width)], f"{self.tenant}/{rel}")
            self.open_pruned = False
        if self.note is not None:
            if self.checkpoint > published_size(self.files.read(self.base / CHECKPOINT)):
                self.files.write(self.base / CHECKPOINT, self.note.encode())   # never backwards (a replay's)
            self.note = None


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
