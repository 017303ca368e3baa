"""A tenant's chain as C2SP tlog-tiles (c2sp.org/tlog-tiles): paths, tile math, entry bundles, and the
offline verifier of an archive directory (projectors/archive.py writes it; docs/archive.md).

Layout of one tenant's directory (every path relative to it):

    checkpoint                          the latest C2SP signed checkpoint note, as recorded on the chain
    tile/<L>/<N>[.p/<W>]                hash tiles: 256 (or W < 256) consecutive RFC 6962 subtree hashes
    tile/entries/<N>[.p/<W>]            entry bundles: big-endian uint16 length-prefixed entries
    events/<N>[.p/<W>]                  the sidecar: the same events' envelopes, one JSON line each

`<N>` is the tile index in zero-padded 3-digit path elements, all but the last prefixed with `x`
(1234067 → x001/x234/067). Level-0 tile hash i of tile N is leaf_hash(entry i of bundle N); a hash at
level L ≥ 1 is the Merkle tree hash of one full tile of level L − 1. An entry is the 32-byte event hash
(leaf = SHA-256(0x00 ‖ bytes.fromhex(env["hash"])), as schemas/merkle.py). A sidecar line is the RFC 8785
JSON of the whole envelope (with `hash`), or, once a retention sweep removed the event's run family, a
tombstone {"chain_seq": n, "hash": <the event hash>, "swept_by": <the sweep's chain_seq>}.

The verifier imports the standard library, `cryptography` (through schemas/notes.py) and schemas/ only.
"""
from __future__ import annotations

import base64
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from schemas.bundle import KeyUnusable, jcs
from schemas.bundle_checks import shape
from schemas.envelope import GENESIS_HASH, compute_hash, decode
from schemas.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, levels, range_root, row_reader
from schemas.notes import Checkpoint, NoteError, Verifier

HEIGHT = 8                      # levels of the Merkle tree one tile spans
WIDTH = 1 << HEIGHT             # hashes in a full tile, entries in a full bundle
TILE_BYTES = WIDTH * HASH_SIZE  # 8,192
MAX_LEVEL = 63
CHECKPOINT = "checkpoint"
KINDS = ("tile", "entries", "events")
CHECKPOINT_SIGNED = "checkpoint.signed"
SWEPT = "retention.swept"
STORE = "archive"               # the read-model name a retention sweep names to prune the sidecar
TOMBSTONE = ("chain_seq", "hash", "swept_by")
TENANT = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")   # infra/adapters/http/auth.py's tenant ids: safe path names
MAX_PROBLEMS = 100
TILE_CACHE = 512   # tiles the root reader keeps (4 MB)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_GROUP, _LAST, _WIDTH = re.compile(r"x[0-9]{3}"), re.compile(r"[0-9]{3}"), re.compile(r"[1-9][0-9]{0,2}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")


class ArchiveUnusable(Exception):
    """Not an archive the verifier can read (exit 2): no such directory, no tenant's archive in it."""


# -- paths ---------------------------------------------------------------------------------------------

def index_path(n: int) -> str:
    """The spec's <N>: 3-digit groups, most significant first, all but the last prefixed with x."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"a tile index is a whole number >= 0, not {n!r}")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    if not 1 <= width <= WIDTH:
        raise ValueError(f"a tile is 1 to {WIDTH} hashes wide, not {width}")
    return "" if width == WIDTH else f".p/{width}"


def tile_path(level: int, n: int, width: int = WIDTH) -> str:
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"a tile level is 0 to {MAX_LEVEL}, not {level}")
    return f"tile/{level}/{index_path(n)}{_suffix(width)}"


def entries_path(n: int, width: int = WIDTH) -> str:
    return f"tile/entries/{index_path(n)}{_suffix(width)}"


def events_path(n: int, width: int = WIDTH) -> str:
    return f"events/{index_path(n)}{_suffix(width)}"


@dataclass(frozen=True, order=True)
class Place:
    """One file of the layout: a hash tile (level 0-63), an entry bundle or a sidecar bundle (level 0)."""
    kind: str
    level: int
    n: int
    width: int = WIDTH

    @property
    def full(self) -> bool:
        return self.width == WIDTH

    @property
    def path(self) -> str:
        if self.kind == "tile":
            return tile_path(self.level, self.n, self.width)
        return (entries_path if self.kind == "entries" else events_path)(self.n, self.width)


def parse_path(rel: str) -> Place | None:
    """The place a relative path names, if it is one of the layout's (in its one canonical spelling)."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[0] == "tile" and parts[1] == "entries":
        kind, level, rest = "entries", 0, parts[2:]
    elif len(parts) >= 3 and parts[0] == "tile" and _LEVEL.fullmatch(parts[1]) and int(parts[1]) <= MAX_LEVEL:
        kind, level, rest = "tile", int(parts[1]), parts[2:]
    elif len(parts) >= 2 and parts[0] == "events":
        kind, level, rest = "events", 0, parts[1:]
    else:
        return None
    width = WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _WIDTH.fullmatch(rest[-1]) or int(rest[-1]) >= WIDTH:
            return None
        width, rest = int(rest[-1]), rest[:-2] + [rest[-2][:-2]]
    *groups, last = rest
    if not _LAST.fullmatch(last) or not all(_GROUP.fullmatch(g) for g in groups):
        return None
    n = 0
    for group in (*(g[1:] for g in groups), last):
        n = n * 1000 + int(group)
    place = Place(kind, level, n, width)
    return place if place.path == rel else None   # x000/005 is not how 5 is written


# -- tile math ----------------------------------------------------------------------------------------

def width_at(level: int, size: int) -> int:
    """The width of the partial tile at `level` of a tree of `size` (0: none): floor(size / 256**level) mod 256."""
    return (size >> (HEIGHT * level)) & (WIDTH - 1)


def full_tiles(level: int, size: int) -> int:
    """How many full tiles a tree of `size` has at `level`."""
    return size >> (HEIGHT * (level + 1))


def level_count(size: int) -> int:
    """How many levels of tiles a tree of `size` has (0 for the empty tree; 2 for 256: a level-1 tile of 1)."""
    count = 0
    while size >> (HEIGHT * count):
        count += 1
    return count


def tree_tiles(size: int) -> list[Place]:
    """Every hash tile of a tree of `size`, level by level: its full tiles and its partial tile, if any."""
    out = []
    for level in range(level_count(size)):
        out += [Place("tile", level, n) for n in range(full_tiles(level, size))]
        if width := width_at(level, size):
            out.append(Place("tile", level, full_tiles(level, size), width))
    return out


def subtree_hash(hashes: bytes) -> bytes:
    """RFC 9162 MTH over a row of node hashes (a tile's, or any prefix of one): the root over them as leaves."""
    if len(hashes) % HASH_SIZE:
        raise ValueError(f"a row of hashes is a multiple of {HASH_SIZE} bytes, not {len(hashes)}")
    count = len(hashes) // HASH_SIZE
    if count == 0:
        return EMPTY_ROOT
    if count == 1:
        return bytes(hashes)
    rows = levels(hashes[i:i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE))
    return range_root(row_reader(rows), 0, count)


TileReader = Callable[[int, int, int], bytes]   # (level, n, hashes needed) -> at least that prefix of tile n


class TileNodes:
    """schemas/merkle.py's node(level, index) from tiles, so range_root and the proofs work over them.

    A subtree of height h = 8·L + k is 2**k consecutive hashes of one tile at level L, hashed together.
    `tile(L, n, w)` returns at least the first w hashes of tile n of level L (the full tile or a partial
    one); answers are cached, so roots at many sizes cost a few new nodes each."""

    def __init__(self, tile: TileReader):
        self.tile = tile
        self._nodes: dict[tuple[int, int], bytes] = {}

    def node(self, height: int, index: int) -> bytes:
        key = (height, index)
        if key not in self._nodes:
            level, k = divmod(height, HEIGHT)
            n, offset = divmod(index << k, WIDTH)
            data = self.tile(level, n, offset + (1 << k))
            part = data[offset * HASH_SIZE:(offset + (1 << k)) * HASH_SIZE]
            if len(part) != HASH_SIZE << k:
                raise IndexError(f"{tile_path(level, n)} has {len(data) // HASH_SIZE} hashes; "
                                 f"{offset + (1 << k)} are needed")
            self._nodes[key] = subtree_hash(part)
        return self._nodes[key]


def tree_root(tile: TileReader | TileNodes, size: int) -> bytes:
    """The RFC 9162 root of the first `size` leaves, from tiles."""
    nodes = tile if isinstance(tile, TileNodes) else TileNodes(tile)
    return range_root(nodes.node, 0, size)


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    out = bytearray()
    for entry in entries:
        if len(entry) > 0xFFFF:
            raise ValueError(f"an entry is at most 65535 bytes, not {len(entry)}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; ValueError naming the offset where it stops being one."""
    entries, at = [], 0
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError(f"a length prefix is cut short at byte {at}")
        length = int.from_bytes(data[at:at + 2], "big")
        if at + 2 + length > len(data):
            raise ValueError(f"entry {len(entries)} at byte {at} says {length} bytes; {len(data) - at - 2} are left")
        entries.append(bytes(data[at + 2:at + 2 + length]))
        at += 2 + length
    return entries


def tombstone(seq: int, hash_hex: str, swept_by: int) -> bytes:
    """The sidecar line of an event whose run family a retention sweep removed: what stays is its hash."""
    return jcs({"chain_seq": seq, "hash": hash_hex, "swept_by": swept_by}) + b"\n"


def is_tombstone(value: Any) -> bool:
    return isinstance(value, dict) and "swept_by" in value and "event_id" not in value


def tombstone_problem(value: dict, seq: int) -> str | None:
    if sorted(value) != sorted(TOMBSTONE):
        return f"a tombstone has exactly {', '.join(TOMBSTONE)}, not {', '.join(sorted(value))}"
    if type(value["chain_seq"]) is not int or value["chain_seq"] != seq:
        return f"the tombstone's chain_seq is {value['chain_seq']!r}, not {seq}"
    if not isinstance(value["hash"], str) or not _HEX64.fullmatch(value["hash"]):
        return f"the tombstone's hash {value['hash']!r} is not 64 lowercase hex digits"
    if type(value["swept_by"]) is not int or value["swept_by"] <= seq:
        return f"the tombstone's swept_by {value['swept_by']!r} is not a chain_seq after {seq}"
    return None


def load_keys(text: str) -> list[Verifier]:
    """Verifiers from a vkey, or from a file holding one or more (one a line; blank and # lines skipped)."""
    try:
        return [Verifier.from_vkey(text.strip())]
    except NoteError as error:
        problem = error
    try:
        lines = Path(text).read_text().splitlines()
    except FileNotFoundError:
        raise KeyUnusable(f"--key {text[:80]!r} is neither a vkey ({problem}) nor a file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise KeyUnusable(f"--key file {text[:80]!r}: {error}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                keys.append(Verifier.from_vkey(line.strip()))
            except NoteError as error:
                raise KeyUnusable(f"--key file {text[:80]!r} line {number}: {error}") from None
    if not keys:
        raise KeyUnusable(f"--key file {text[:80]!r} holds no vkey")
    return keys


# -- the verifier -------------------------------------------------------------------------------------

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
class _Leaf:
    """What the archive says of one chain_seq, resolved: its event hash (None if no file says it), its leaf
    hash (what the levels above are checked against) and its sidecar line."""
    resolved: bytes | None
    leaf: bytes
    line: bytes | None


class _Files:
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


def _scan(files: _Files, r: ArchiveReport) -> None:
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


def _size(files: _Files) -> int:
    return max((n * WIDTH + w for (kind, level, n), widths in files.versions.items() if level == 0
                for w in widths), default=0)


def _open_checkpoint(files: _Files, keys: Sequence[Verifier], tenant: str, size: int,
                     r: ArchiveReport) -> Checkpoint | None:
    note = files.read(CHECKPOINT)
    if note is None:
        r.fail("checkpoint: missing")
        return None
    try:
        checkpoint, verified = Checkpoint.open(note, keys)
    except NoteError as error:
        r.fail(f"checkpoint: {error}")
        return None
    parts = checkpoint.origin.split("/")
    if len(parts) != 3 or parts[0] != "runledger" or parts[2] != tenant:
        r.fail(f"checkpoint: origin {checkpoint.origin!r} is not runledger/<deployment>/{tenant}")
    if checkpoint.size > size:
        r.fail(f"checkpoint: it signs size {checkpoint.size}, but the archive holds {size} entries")
    r.key = next(f"{v.name}+{v.key_id:08x}" for v in verified if v.name == checkpoint.origin)
    return checkpoint


class _Level0:
    """The level-0 pass: every bundle's entries, level-0 tile and sidecar lines, against each other."""

    def __init__(self, files: _Files, tenant: str, size: int, r: ArchiveReport):
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

    def prefix(self, place: Place, resolved: bytes, leaves: list[_Leaf], primary: Place, start: str | None) -> None:
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

    def leaf(self, seq: int, i: int, tile: Place, entries: Place, events: Place, loaded: dict) -> _Leaf:
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
            return _Leaf(None, hashed if hashed is not None else bytes(HASH_SIZE), line)
        if hashed is not None and hashed != leaf_hash(resolved):
            r.fail(f"{tile.path}: hash {i} is not the hash of entry {i} of {entries.path} (chain_seq {seq})")
        return _Leaf(resolved, leaf_hash(resolved), line)

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


def _upper_levels(files: _Files, size: int, level1: bytes, r: ArchiveReport) -> None:
    """Each tile of level 1 and above against the roots of the full tiles below, as the entries resolve them."""
    computed, level = bytes(level1), 1
    while level < level_count(size):
        above = bytearray()
        count = len(computed) // HASH_SIZE   # = size >> 8·level
        for n in range((count + WIDTH - 1) // WIDTH):
            width = min(WIDTH, count - n * WIDTH)
            if width == WIDTH and not files.has(Place("tile", level, n)):
                r.fail(f"{tile_path(level, n)}: missing")
            for other in files.widths("tile", level, n):
                place = Place("tile", level, n, other)
                data = files.read(place.path)
                if data is None or len(data) != other * HASH_SIZE:
                    r.fail(f"{place.path}: {'missing' if data is None else f'{len(data)} bytes, not {other} hashes'}")
                    continue
                for i in range(min(other, width)):
                    want = computed[(n * WIDTH + i) * HASH_SIZE:(n * WIDTH + i + 1) * HASH_SIZE]
                    if data[i * HASH_SIZE:(i + 1) * HASH_SIZE] != want:
                        r.fail(f"{place.path}: hash {i} is not the hash of {tile_path(level - 1, n * WIDTH + i)}")
                if other > width:
                    r.fail(f"{place.path}: {other} hashes, but the tree of {size} has {width} in that tile")
            if width == WIDTH:
                above += subtree_hash(computed[n * TILE_BYTES:(n + 1) * TILE_BYTES])
        computed, level = bytes(above), level + 1
    for kind, level, n in sorted(files.versions):
        if kind == "tile" and level >= 1 and n * WIDTH >= size >> (HEIGHT * level):
            r.fail(f"{tile_path(level, n, max(files.widths(kind, level, n)))}: beyond the tree of {size}")


def _root(nodes: TileNodes, size: int) -> bytes | str:
    try:
        return tree_root(nodes, size)
    except (LookupError, ValueError) as error:
        return f"cannot be computed from the tiles ({error})"


def _checkpoint_partials(files: _Files, sizes: Iterable[int], size: int, r: ArchiveReport) -> None:
    """tlog-tiles: the partial tiles (and bundles) of every checkpointed size stay while their tile is open."""
    for c in sorted(set(sizes)):
        for level in range(level_count(c)):
            width, n = width_at(level, c), full_tiles(level, c)
            if not width or n != full_tiles(level, size):
                continue
            for kind in KINDS if level == 0 else ("tile",):
                if not files.has(place := Place(kind, level, n, width)):
                    r.fail(f"{place.path}: missing (the checkpoint of size {c} needs it)")


def verify_tenant(path: Path, keys: Sequence[Verifier], tenant: str | None = None) -> ArchiveReport:
    """Check one tenant's archive directory from its files alone (docs/archive.md, "What verify-archive checks")."""
    path = Path(path)
    tenant = tenant or path.name
    r = ArchiveReport(tenant, path)
    files = _Files(path)
    _scan(files, r)
    r.size = size = _size(files)
    checkpoint = _open_checkpoint(files, keys, tenant, size, r)
    level0 = _Level0(files, tenant, size, r)
    level0.run()
    _upper_levels(files, size, level0.level1, r)
    nodes = TileNodes(files.tile)
    known = [p["size"] for _, _, p in level0.checkpoints if type(p.get("size")) is int and 0 < p["size"] <= size]
    _checkpoint_partials(files, known + ([checkpoint.size] if checkpoint and checkpoint.size <= size else []), size, r)
    if checkpoint is not None and checkpoint.size <= size:
        root = _root(nodes, checkpoint.size)
        if root != checkpoint.root:
            r.fail(f"checkpoint: the root of size {checkpoint.size} {_b64(root)}, but the checkpoint signs "
                   f"{base64.b64encode(checkpoint.root).decode()}")
        elif not r.problems:
            r.checkpoint_size, r.root = checkpoint.size, checkpoint.root
    for where, seq, payload in level0.checkpoints:
        _check_recorded_checkpoint(where, seq, payload, checkpoint, nodes, size, r)
    _check_tombstones(level0, size, r)
    return r


def _b64(root: bytes | str) -> str:
    return f"from the tiles is {base64.b64encode(root).decode()}" if isinstance(root, bytes) else root


def _check_recorded_checkpoint(where: str, seq: int, payload: dict, checkpoint: Checkpoint | None,
                               nodes: TileNodes, size: int, r: ArchiveReport) -> None:
    try:
        recorded, _ = Checkpoint.open(payload["note"].encode(), [Verifier.from_vkey(payload["key"])])
    except (NoteError, KeyError, TypeError, AttributeError) as error:
        r.fail(f"{where}: the checkpoint.signed note does not open under its own key ({error!r})")
        return
    if recorded.size != payload.get("size") or base64.b64encode(recorded.root).decode() != payload.get("root"):
        r.fail(f"{where}: the checkpoint.signed payload's size and root are not its note's")
        return
    if not 0 < recorded.size < seq:
        r.fail(f"{where}: a checkpoint at chain_seq {seq} cannot sign size {recorded.size}")
        return
    root = _root(nodes, recorded.size)
    if root != recorded.root:
        r.fail(f"{where}: it signs root {payload['root']} for size {recorded.size}, but the root {_b64(root)}")
        return
    r.checkpoints += 1
    if checkpoint is not None:
        if checkpoint.size < recorded.size:
            r.fail(f"checkpoint: it signs size {checkpoint.size}, but chain_seq {seq} ({where.split(' ')[0]}) "
                   f"signs the later size {recorded.size}")
        elif checkpoint.size == recorded.size and checkpoint.root != recorded.root:
            r.fail(f"checkpoint: a fork: chain_seq {seq} signs another root for size {recorded.size}")


def _check_tombstones(level0: _Level0, size: int, r: ArchiveReport) -> None:
    later = 0
    for where, seq, swept_by in level0.tombstones:
        if swept_by > size:
            later += 1
        elif swept_by not in level0.sweeps:
            r.fail(f"{where}: the tombstone names chain_seq {swept_by}, which is not a retention.swept event")
        elif not level0.sweeps[swept_by]:
            r.fail(f"{where}: the tombstone names chain_seq {swept_by}, a sweep that does not name the {STORE} store")
    if later:
        r.warnings.append(f"{later} tombstones name sweeps beyond the archive's {size} entries: a later archive "
                          "shows them")


def looks_like_tenant(path: Path) -> bool:
    return (path / CHECKPOINT).is_file() or (path / "tile").is_dir() or (path / "events").is_dir()


def tenant_dirs(root: Path, tenant: str | None = None) -> list[Path]:
    """The tenant archives under `root` (or `root` itself, if it is one); ArchiveUnusable if none."""
    root = Path(root)
    if not root.is_dir():
        raise ArchiveUnusable(f"{root}: no such directory")
    if tenant is not None:
        if (root / tenant).is_dir() and looks_like_tenant(root / tenant):
            return [root / tenant]
        if root.name == tenant and looks_like_tenant(root):
            return [root]
        raise ArchiveUnusable(f"{root}: no archive of tenant {tenant!r} ({root / tenant} has no checkpoint or tile/)")
    if looks_like_tenant(root):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and TENANT.fullmatch(p.name) and looks_like_tenant(p))
    if not found:
        raise ArchiveUnusable(f"{root}: neither a tenant's archive (checkpoint, tile/) nor a directory of them")
    return found


def verify_archive(root: Path, keys: Sequence[Verifier], tenant: str | None = None) -> list[ArchiveReport]:
    """Verify every tenant archive under root (or the one named), each from its files alone."""
    return [verify_tenant(path, keys, tenant or path.name) for path in tenant_dirs(root, tenant)]
