"""Write an evidence bundle from a tenant's envelopes in chain order: pure, no Kafka, no HTTP.

`BundleWriter.feed` takes the chain one envelope at a time and writes the scope's events to a spool file as
they come (RFC 8785, one per line); it keeps only 32 bytes per event (the hash, for the tree), the
checkpoints, the governance records and the scope's events since the last checkpoint. `finish` cuts the
bundle at the latest `checkpoint.signed` (later events are not yet covered), checks every checkpoint's root
against the chain's own hashes, and writes the tar: members in docs/evidence.md order, manifest last.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
import tarfile
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from schemas.bundle import FORMAT, GOVERNANCE_TYPES, MANIFEST, MEMBERS, VERSION, jcs
from schemas.bundle_render import render
from schemas.bundle_resume import Resumable
from schemas.bundle_scope import Selector, Summary, describe, fold_governance
from schemas.envelope import GENESIS_HASH, compute_hash
from schemas.merkle import HASH_SIZE, leaf_hash
from schemas.merkle_trees import TreeStore
from schemas.notes import Checkpoint, NoteError, Verifier


class ExportRefused(ValueError):
    """Nothing can be exported as asked (no checkpoint yet, no event in scope, a bad --since-size)."""


class ChainBroken(ValueError):
    """The chain read does not link up, or a checkpoint on it does not sign the chain's own root."""


@dataclass(frozen=True)
class Written:
    path: Path
    sha256: str
    nbytes: int
    manifest: dict[str, Any]

    @property
    def scope_events(self) -> int:
        return self.manifest["counts"]["scope_events"]




class BundleWriter(Resumable):
    def __init__(self, tenant: str, scope: dict[str, Any], workdir: Path, since_size: int | None = None,
                 _resuming: bool = False):
        self.tenant, self.scope, self.since_size, self.workdir = tenant, scope, since_size, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spool = open(self.workdir / "scope.jsonl", "r+b" if _resuming else "w+b")
        self._written = 0
        self._saved = {"hashes": 0, "seqs": 0}   # what the append-only state files already hold
        self.seqs, self.ends = array("q"), array("q")   # the scope's chain_seqs and where each line ends
        self.hashes = bytearray()
        self.head_seq, self.head_hash = 0, GENESIS_HASH
        self.checkpoints: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.summary, self._pending = Summary(), []
        self.selector = Selector(scope)

    def feed(self, env: dict[str, Any]) -> None:
        seq = env["chain_seq"]
        if env["tenant_id"] != self.tenant or seq != self.head_seq + 1 or env["prev_hash"] != self.head_hash:
            raise ChainBroken(f"chain_seq {seq} of tenant {env['tenant_id']!r} does not follow chain_seq "
                              f"{self.head_seq} of {self.tenant!r} (gap, duplicate or prev_hash mismatch)")
        self.head_seq, self.head_hash = seq, env["hash"]
        self.hashes += bytes.fromhex(env["hash"])
        kind = env["type"]
        if kind == "checkpoint.signed":
            self._signed(env)
        elif kind in GOVERNANCE_TYPES:
            self.records.append(env)
        if self.selector.wants(env):
            if compute_hash(env) != env["hash"]:
                raise ChainBroken(f"chain_seq {seq}: hash does not recompute")
            line = jcs(env) + b"\n"
            self._spool.write(line)
            self._written += len(line)
            self.seqs.append(seq)
            self.ends.append(self._written)
            self._pending.append(env)

    def _signed(self, env: dict[str, Any]) -> None:
        p = env["payload"]
        self.checkpoints.append({"chain_seq": env["chain_seq"], "size": p["size"], "root": p["root"],
                                 "note": p["note"], "key": p["key"], "origin": p["origin"]})
        for pending in self._pending:
            if pending["chain_seq"] <= p["size"]:
                self.summary.add(pending)
        self._pending = [e for e in self._pending if e["chain_seq"] > p["size"]]

    def _tree(self, size: int) -> TreeStore:
        hashes = memoryview(self.hashes)
        tree = TreeStore.from_leaf_hashes(leaf_hash(hashes[i:i + HASH_SIZE]) for i in range(0, size * HASH_SIZE, HASH_SIZE))
        for cp in self.checkpoints:
            if base64.b64decode(cp["root"]) != tree.root(cp["size"]):
                raise ChainBroken(f"the checkpoint at chain_seq {cp['chain_seq']} signs root {cp['root']} for size "
                                  f"{cp['size']}; the chain's own root at that size is "
                                  f"{base64.b64encode(tree.root(cp['size'])).decode()}")
        last = self.checkpoints[-1]
        try:
            Checkpoint.open(last["note"].encode(), [Verifier.from_vkey(last["key"])], last["origin"])
        except NoteError as error:
            raise ChainBroken(f"the checkpoint at chain_seq {last['chain_seq']} does not open: {error}") from None
        return tree

    def cut(self) -> tuple[dict[str, Any], int]:
        """The latest checkpoint and how many scope events it covers; ExportRefused if there is nothing to export."""
        if not self.checkpoints:
            raise ExportRefused(f"no checkpoint yet in tenant {self.tenant}: none of its {self.head_seq} events is "
                                f"covered by a signed checkpoint; export again once one is recorded")
        cp = self.checkpoints[-1]
        count = bisect.bisect_right(self.seqs, cp["size"])
        if count == 0:
            later = len(self.seqs)
            raise ExportRefused(f"no events of {describe(self.scope)} in tenant {self.tenant}" + (
                f" up to its latest checkpoint (size {cp['size']}); {later} come after it and are not yet covered"
                if later else ""))
        if self.since_size is not None and not 1 <= self.since_size <= cp["size"]:
            raise ExportRefused(f"--since-size {self.since_size} is not a tree size from 1 to the checkpoint's "
                                f"size {cp['size']}")
        return cp, count

    def finish(self, out: Path, exported_at: str, tick: Callable[[int], None] = lambda n: None) -> Written:
        """Write the bundle to `out` (the caller renames it into place) and return its digest."""
        cp, count = self.cut()
        size = cp["size"]
        self._spool.flush()
        self._spool.truncate(self.ends[count - 1])
        tree = self._tree(size)
        governance, cited = fold_governance((r for r in self.records if r["chain_seq"] <= size), self.summary,
                                            self.scope["kind"] == "tenant")
        extra = [r for r in self.records if r["chain_seq"] in cited and not self._selected(r["chain_seq"], count)]
        context = [e for e in self.selector.context_envelopes(size) if not self._selected(e["chain_seq"], count)
                   and e["chain_seq"] not in cited]
        extra = sorted(extra + context, key=lambda e: e["chain_seq"])
        earlier = self._earlier(tree, size)
        head = {"format": FORMAT, "version": VERSION, "tenant": self.tenant, "origin": cp["origin"],
                "scope": self.scope, "exported_at": exported_at, "chain_seen": self.head_seq,
                "uncovered": self.head_seq - size,
                "checkpoint": {k: cp[k] for k in ("chain_seq", "size", "root", "note", "key")},
                "counts": {"events": count + len(extra), "scope_events": count,
                           "governance_events": len(extra) - len(context), "checkpoints": len(earlier),
                           **({"context_events": len(context)} if self.scope["kind"] == "query" else {})},
                "destroyed_key_ids": governance["destroyed_key_ids"]}
        d = self.workdir
        (d / "checkpoint.note").write_bytes(cp["note"].encode())
        (d / "checkpoints.jsonl").write_bytes(b"".join(jcs(e) + b"\n" for e in earlier))
        (d / "governance.json").write_bytes(jcs(governance) + b"\n")
        with open(d / "events.jsonl", "wb") as ev, open(d / "proofs.jsonl", "wb") as pr, \
                open(d / "record.md", "w", encoding="utf-8", newline="\n") as md:
            def envs() -> Iterable[dict]:
                for seq, line in self._merged(count, extra):
                    ev.write(line)
                    pr.write(_proof_line(seq, size, tree.inclusion_proof(seq - 1, size)))
                    tick(1)
                    yield json.loads(line)
            for text in render(head, governance, envs()):
                md.write(text + "\n")
        members = {name: {"sha256": _file_sha256(d / name), "bytes": (d / name).stat().st_size} for name in MEMBERS}
        manifest = {**head, "members": members}
        (d / MANIFEST).write_bytes(json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n")
        _tar(Path(out), d, datetime.fromisoformat(exported_at).timestamp())
        return Written(Path(out), _file_sha256(Path(out)), Path(out).stat().st_size, manifest)

    def _selected(self, seq: int, count: int) -> bool:
        i = bisect.bisect_left(self.seqs, seq, 0, count)
        return i < count and self.seqs[i] == seq

    def _merged(self, count: int, extra: list[dict]) -> Iterable[tuple[int, bytes]]:
        """The scope's lines from the spool with the governance records touching it, in chain order."""
        self._spool.seek(0)
        queue = iter(extra)
        nxt = next(queue, None)
        for i in range(count):
            seq = self.seqs[i]
            while nxt is not None and nxt["chain_seq"] < seq:
                yield nxt["chain_seq"], jcs(nxt) + b"\n"
                nxt = next(queue, None)
            yield seq, self._spool.readline()
        while nxt is not None:
            yield nxt["chain_seq"], jcs(nxt) + b"\n"
            nxt = next(queue, None)

    def _earlier(self, tree: TreeStore, size: int) -> list[dict[str, Any]]:
        """Every earlier checkpoint on the chain (and --since-size), with its consistency proof to `size`."""
        entries = [{k: cp[k] for k in ("chain_seq", "size", "root", "note", "key")} for cp in self.checkpoints[:-1]]
        if self.since_size is not None and self.since_size not in {e["size"] for e in entries}:
            entries.append({"chain_seq": None, "size": self.since_size, "note": None, "key": None,
                            "root": base64.b64encode(tree.root(self.since_size)).decode()})
        for e in entries:
            e["proof"] = [h.hex() for h in tree.consistency_proof(e["size"], size)]
        return sorted(entries, key=lambda e: e["size"])

    def close(self) -> None:
        self._spool.close()



def _proof_line(seq: int, size: int, hashes: list[bytes]) -> bytes:
    """A proofs.jsonl line: RFC 8785 of an object of ASCII strings and small integers is json.dumps sorted."""
    return json.dumps({"chain_seq": seq, "hashes": [h.hex() for h in hashes], "leaf_index": seq - 1,
                       "tree_size": size}, separators=(",", ":")).encode() + b"\n"


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _tar(out: Path, d: Path, mtime: float) -> None:
    with open(out, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in (*MEMBERS, MANIFEST):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = (d / name).stat().st_size, int(mtime), 0o644
                with open(d / name, "rb") as f:
                    tar.addfile(info, f)
        raw.flush()
        os.fsync(raw.fileno())


def write_bundle(envelopes: Iterable[dict[str, Any]], tenant: str, scope: dict[str, Any], out: Path,
                 workdir: Path, exported_at: str, since_size: int | None = None) -> Written:
    """Feed a whole chain and write its bundle (what the export job does, minus Kafka and HTTP)."""
    writer = BundleWriter(tenant, scope, workdir, since_size)
    try:
        for env in envelopes:
            writer.feed(env)
        return writer.finish(out, exported_at)
    finally:
        writer.close()
