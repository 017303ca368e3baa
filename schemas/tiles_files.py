"""Reading one tenant's archive directory and the level-0 pass of its verifier: every entry bundle, level-0
tile and sidecar line against each other (schemas/tiles_verify.py runs the rest; docs/archive.md).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.bundle import jcs
from schemas.bundle_checks import shape
from schemas.envelope import GENESIS_HASH, compute_hash, decode
from schemas.merkle import HASH_SIZE, leaf_hash
from schemas.tiles import (CHECKPOINT, CHECKPOINT_SIGNED, HEIGHT, KINDS, MAX_PROBLEMS, STORE, SWEPT, TILE_CACHE, WIDTH,
                           Place, decode_bundle, is_tombstone, parse_path, subtree_hash, tile_path, tombstone_problem)


@dataclass
class ArchiveReport:
    tenant: str
    path: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: int = 0
    size: int = 0                        # entries in the archive
    checkpoint_size: int | None = None   # the signed size of its checkpoint, once it verified
    root: bytes = b""
    key: str = ""
    envelopes: int = 0
    tombstones: int = 0
    checkpoints: int = 0                 # checkpoint.signed events in the sidecar whose root the tiles give

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str) -> None:
        if message in self.problems:
            return
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)
        else:
            self.dropped += 1


@dataclass
class Leaf:
    """What the archive says of one chain_seq, resolved: its event hash (None if no file says it), its leaf
    hash (what the levels above are checked against) and its sidecar line."""
    resolved: bytes | None
    leaf: bytes
    line: bytes | None


class ArchiveFiles:
    """A tenant directory's files, read at most once each that matter (tiles cached for the root reader)."""

    def __init__(self, base: Path):
        self.base = base
        self.versions: dict[tuple[str, int, int], set[int]] = {}
        self._tiles: OrderedDict[str, bytes | None] = OrderedDict()   # the root reader's, newest last

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.base / rel).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def has(self, place: Place) -> bool:
        return place.width in self.versions.get((place.kind, place.level, place.n), ())

    def widths(self, kind: str, level: int, n: int) -> list[int]:
        return sorted(self.versions.get((kind, level, n), ()))

    def tile(self, level: int, n: int, needed: int) -> bytes:
        """The smallest version of tile n of `level` holding `needed` hashes (for the root reader)."""
        for width in self.widths("tile", level, n):
            if width >= needed:
                rel = tile_path(level, n, width)
                if rel not in self._tiles:
                    self._tiles[rel] = self.read(rel)
                    if len(self._tiles) > TILE_CACHE:
                        self._tiles.popitem(last=False)
                self._tiles.move_to_end(rel)
                data = self._tiles[rel]
                if data is not None and len(data) == width * HASH_SIZE:
                    return data
        if not self.widths("tile", level, n):
            raise LookupError(f"{tile_path(level, n)} is missing")
        raise LookupError(f"{tile_path(level, n)} has no version of {needed} hashes or more")


def scan(files: ArchiveFiles, r: ArchiveReport) -> None:
    for top in sorted(files.base.iterdir()):
        if top.name == CHECKPOINT and top.is_file():
            continue
        if top.name in ("tile", "events") and top.is_dir():
            for dirpath, _, names in os.walk(top):
                for name in sorted(names):
                    rel = Path(dirpath, name).relative_to(files.base).as_posix()
                    place = parse_path(rel)
                    if place is None:
                        r.fail(f"{rel}: not a file of the tlog-tiles layout")
                    else:
                        files.versions.setdefault((place.kind, place.level, place.n), set()).add(place.width)
            continue
        r.fail(f"{top.name}: not part of a tenant's archive (checkpoint, tile/, events/)")


def archived_size(files: ArchiveFiles) -> int:
    return max((n * WIDTH + w for (kind, level, n), widths in files.versions.items() if level == 0
                for w in widths), default=0)


class Level0:
    """The level-0 pass: every bundle's entries, level-0 tile and sidecar lines, against each other."""

    def __init__(self, files: ArchiveFiles, tenant: str, size: int, r: ArchiveReport):
        self.files, self.tenant, self.size, self.r = files, tenant, size, r
        self.prev: str | None = GENESIS_HASH                  # the hash the next envelope must link to, if known
        self.level1 = bytearray()                            # roots of full level-0 tiles, as resolved
        self.sweeps: dict[int, bool] = {}                    # chain_seq of a retention.swept → names the archive
        self.tombstones: list[tuple[str, int, int]] = []     # (where, chain_seq, swept_by)
        self.checkpoints: list[tuple[str, int, dict]] = []   # (where, chain_seq, payload)

    def run(self) -> None:
        for n in range((self.size + WIDTH - 1) // WIDTH):
            self.bundle(n, WIDTH if n < self.size >> HEIGHT else self.size & (WIDTH - 1))

    def load(self, place: Place) -> Any:
        """A version's content: tile bytes, a list of entries, or a list of lines; None (named) if unusable."""
        data = self.files.read(place.path)
        if data is None:
            self.r.fail(f"{place.path}: missing")
            return None
        if place.kind == "tile":
            if len(data) != place.width * HASH_SIZE:
                self.r.fail(f"{place.path}: {len(data)} bytes, not {place.width} hashes of {HASH_SIZE}")
                return None
            return data
        if place.kind == "entries":
            try:
                entries = decode_bundle(data)
            except ValueError as error:
                self.r.fail(f"{place.path}: not an entry bundle: {error}")
                return None
            if len(entries) != place.width:
                self.r.fail(f"{place.path}: {len(entries)} entries, not {place.width}")
                return None
            return entries
        lines = data.split(b"\n")
        if lines[-1] != b"" or len(lines) - 1 != place.width:
            self.r.fail(f"{place.path}: {len(lines) - 1} newline-terminated lines, not {place.width}"
                        + ("" if lines[-1] == b"" else " (the last has no newline)"))
            return None
        return [line + b"\n" for line in lines[:-1]]

    def bundle(self, n: int, width: int) -> None:
        tile, entries, events = (Place(k, 0, n, width) for k in KINDS)
        loaded = {p.kind: self.load(p) for p in (tile, entries, events)}
        leaves, start = [], self.prev
        for i in range(width):
            seq = n * WIDTH + i + 1
            leaf = self.leaf(seq, i, tile, entries, events, loaded)
            leaves.append(leaf)
            self.prev = leaf.resolved.hex() if leaf.resolved is not None else None
        resolved = b"".join(leaf.leaf for leaf in leaves)
        if width == WIDTH:
            self.level1 += subtree_hash(resolved)
        for kind in KINDS:
            for other in self.files.widths(kind, 0, n):
                if other < width:
                    self.prefix(Place(kind, 0, n, other), resolved, leaves, Place(kind, 0, n, width), start)

    def prefix(self, place: Place, resolved: bytes, leaves: list[Leaf], primary: Place, start: str | None) -> None:
        """Another version of the bundle (a checkpoint's partial): the first hashes, entries or lines of it."""
        got = self.load(place)
        if got is None:
            return
        for i in range(place.width):
            seq = place.n * WIDTH + i + 1
            hashed = slice(i * HASH_SIZE, (i + 1) * HASH_SIZE)
            if place.kind == "tile" and got[hashed] != resolved[hashed]:
                self.r.fail(f"{place.path}: hash {i} is not the hash of entry {i} (chain_seq {seq})")
            elif place.kind == "entries" and leaves[i].resolved is not None and got[i] != leaves[i].resolved:
                self.r.fail(f"{place.path}: entry {i} (chain_seq {seq}) is {got[i].hex()}, not "
                            f"{leaves[i].resolved.hex()}")
            elif place.kind == "events" and leaves[i].line is not None and got[i] != leaves[i].line:
                self.r.fail(f"{place.path} line {i + 1} (chain_seq {seq}): differs from line {i + 1} of {primary.path}")
            elif place.kind == "events" and leaves[i].line is None:
                prev = start if i == 0 else (leaves[i - 1].resolved.hex() if leaves[i - 1].resolved else None)
                said = self.sidecar(place, i, seq, got[i], prev, record=False)
                if said is not None and leaves[i].resolved is not None and said != leaves[i].resolved:
                    self.r.fail(f"{place.path} line {i + 1} (chain_seq {seq}): has hash {said.hex()}, not "
                                f"{leaves[i].resolved.hex()}")

    def leaf(self, seq: int, i: int, tile: Place, entries: Place, events: Place, loaded: dict) -> Leaf:
        r = self.r
        entry = loaded["entries"][i] if loaded["entries"] is not None else None
        if entry is not None and len(entry) != HASH_SIZE:
            r.fail(f"{entries.path}: entry {i} (chain_seq {seq}) is {len(entry)} bytes, not a {HASH_SIZE}-byte "
                   "event hash")
            entry = None
        hashed = loaded["tile"][i * HASH_SIZE:(i + 1) * HASH_SIZE] if loaded["tile"] is not None else None
        line = loaded["events"][i] if loaded["events"] is not None else None
        said = self.sidecar(events, i, seq, line, self.prev) if line is not None else None
        if entry is not None and (said is None or said == entry):
            resolved = entry
        elif entry is None:
            resolved = said
        elif hashed == leaf_hash(said):
            resolved = said
            r.fail(f"{entries.path}: entry {i} (chain_seq {seq}) is {entry.hex()}, but line {i + 1} of {events.path} "
                   f"and hash {i} of {tile.path} say {said.hex()}")
        elif hashed == leaf_hash(entry):
            resolved = entry
            r.fail(f"{events.path} line {i + 1} (chain_seq {seq}): has hash {said.hex()}, but entry {i} of "
                   f"{entries.path} and hash {i} of {tile.path} say {entry.hex()}")
        else:
            resolved = entry
            r.fail(f"chain_seq {seq}: entry {i} of {entries.path} ({entry.hex()}), line {i + 1} of {events.path} "
                   f"({said.hex()}) and hash {i} of {tile.path} disagree")
            hashed = None
        if resolved is None:   # both files missing or unreadable (named): the tile's hash is all there is
            return Leaf(None, hashed if hashed is not None else bytes(HASH_SIZE), line)
        if hashed is not None and hashed != leaf_hash(resolved):
            r.fail(f"{tile.path}: hash {i} is not the hash of entry {i} of {entries.path} (chain_seq {seq})")
        return Leaf(resolved, leaf_hash(resolved), line)

    def sidecar(self, events: Place, i: int, seq: int, line: bytes, prev: str | None,
                record: bool = True) -> bytes | None:
        """Check one sidecar line; return the event hash it vouches for (None if it vouches for nothing).

        `prev`: the hash it must link to, if known. `record`: count it, and keep what later checks need
        (sweeps, tombstones, checkpoints)."""
        where = f"{events.path} line {i + 1} (chain_seq {seq})"
        try:
            value = decode(line)
        except ValueError as error:
            self.r.fail(f"{where}: not JSON ({error})")
            return None
        if jcs(value) + b"\n" != line:
            self.r.fail(f"{where}: not RFC 8785 canonical JSON")
        if is_tombstone(value):
            if problem := tombstone_problem(value, seq):
                self.r.fail(f"{where}: {problem}")
                return None
            if record:
                self.tombstones.append((where, seq, value["swept_by"]))
                self.r.tombstones += 1
            return bytes.fromhex(value["hash"])
        if problem := shape(value):
            self.r.fail(f"{where}: {problem}")
            return None
        self.r.envelopes += record
        if value["chain_seq"] != seq:
            self.r.fail(f"{where}: the envelope's chain_seq is {value['chain_seq']}")
        if value["tenant_id"] != self.tenant:
            self.r.fail(f"{where}: tenant_id is {value['tenant_id']!r}, not {self.tenant!r}")
        if prev is not None and value["prev_hash"] != prev:
            self.r.fail(f"{where}: prev_hash {value['prev_hash']} does not link to chain_seq {seq - 1} "
                        f"({'the genesis' if seq == 1 else 'hash'} {prev})")
        try:
            computed = compute_hash(value)
        except (ValueError, TypeError) as error:
            self.r.fail(f"{where}: the envelope cannot be hashed ({error})")
            return None
        if computed != value["hash"]:
            self.r.fail(f"{where}: the envelope does not re-hash to its hash {value['hash']} (it hashes to {computed})")
            return None
        if record and value["type"] == SWEPT:
            stores = value["payload"].get("stores")
            self.sweeps[seq] = isinstance(stores, list) and STORE in stores
        elif record and value["type"] == CHECKPOINT_SIGNED:
            self.checkpoints.append((where, seq, value["payload"]))
        return bytes.fromhex(computed)
