"""The offline verifier of an archive directory of C2SP tlog-tiles (layout: schemas/tiles.py; docs/archive.md).

It imports the standard library, `cryptography` (through schemas/notes.py) and schemas/ only.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterable, Sequence

from schemas.bundle import KeyUnusable
from schemas.merkle import HASH_SIZE
from schemas.notes import Checkpoint, NoteError, Verifier
from schemas.tiles import (CHECKPOINT, HEIGHT, KINDS, STORE, TENANT, TILE_BYTES, WIDTH, ArchiveUnusable, Place,
                           TileNodes, full_tiles, level_count, subtree_hash, tile_path, tree_root, width_at)
from schemas.tiles_files import ArchiveFiles, ArchiveReport, Level0, archived_size, scan


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

def _open_checkpoint(files: ArchiveFiles, keys: Sequence[Verifier], tenant: str, size: int,
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


def _upper_levels(files: ArchiveFiles, size: int, level1: bytes, r: ArchiveReport) -> None:
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


def _checkpoint_partials(files: ArchiveFiles, sizes: Iterable[int], size: int, r: ArchiveReport) -> None:
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
    files = ArchiveFiles(path)
    scan(files, r)
    r.size = size = archived_size(files)
    checkpoint = _open_checkpoint(files, keys, tenant, size, r)
    level0 = Level0(files, tenant, size, r)
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


def _check_tombstones(level0: Level0, size: int, r: ArchiveReport) -> None:
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
