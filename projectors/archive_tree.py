"""One tenant's archive as it grows: the right edge of its tiles, its open bundle, checkpoints and sweeps
(projectors/archive.py drives it; docs/archive.md).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterator

from projectors.archive_files import (ArchiveConflict, ArchiveCorrupt, Files, line_hash, published_size,
                                      tombstoned, write_sidecar)
from projectors.base import Envelope
from projectors.evidence import CHECKPOINT_SIGNED, checkpoint_row
from projectors.removals import governs, sweep_of
from schemas.bundle import jcs
from schemas.merkle import HASH_SIZE, leaf_hash
from schemas.tiles import (CHECKPOINT, STORE, TILE_BYTES, WIDTH, encode_bundle, entries_path, events_path, full_tiles,
                           is_tombstone, level_count, subtree_hash, tile_path, tree_root, width_at)

if TYPE_CHECKING:
    from projectors.archive import ArchiveProjection


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
            if tombstoned(lines, n, runs, owner, sweep.chain_seq):
                lines = write_sidecar(self.files, self.base / rel, lines, f"{self.tenant}/{rel}")
                for width in self.files.listdir(self.base / f"{rel}.p"):
                    write_sidecar(self.files, self.base / events_path(n, int(width)), lines[:int(width)],
                                  f"{self.tenant}/{events_path(n, int(width))}")
                self.write_span(n, lines)
        lines = self.open_lines()
        if tombstoned(lines, n_open, runs, owner, sweep.chain_seq):
            self.set_open_lines(lines)
            self.open_pruned = True

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
