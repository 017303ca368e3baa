"""The archive projection's file work: crash-safe writes (temp, fsync, rename), and the small pure helpers of
its sidecar (projectors/archive.py; docs/archive.md).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from domain.retention import MEMBER_TYPES
from schemas.tiles import WIDTH, is_tombstone, tombstone

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


def tombstoned(lines: list[bytes], n: int, runs: set[str], owner: dict[str, str], swept_by: int) -> bool:
    """Replace, in bundle n's lines, each event of the swept runs by its tombstone; whether any changed."""
    changed = False
    for i, line in enumerate(lines):
        value = json.loads(line)
        if not is_tombstone(value) and run_of(value, owner) in runs:
            lines[i] = tombstone(n * WIDTH + i + 1, value["hash"], swept_by)
            changed = True
    return changed
