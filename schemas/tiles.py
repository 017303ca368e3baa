"""A tenant's chain as C2SP tlog-tiles (c2sp.org/tlog-tiles): paths, tile math, entry bundles and tombstones
(projectors/archive.py writes them; schemas/tiles_verify.py checks an archive offline; docs/archive.md).

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

This module and the verifier import the standard library, `cryptography` (through schemas/notes.py) and schemas/ only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from schemas.bundle import jcs
from schemas.merkle import EMPTY_ROOT, HASH_SIZE, levels, range_root, row_reader

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
