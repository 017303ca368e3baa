"""Saving and resuming a BundleWriter mid-read (schemas/bundle_write.py; infra/entry/export.py resumes exports)."""
from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.bundle_scope import Summary

if TYPE_CHECKING:
    from schemas.bundle_write import BundleWriter

STATE = "state.json"       # a resumable writer's state, written last (atomically) at each save
STATE_FORMAT = "runledger-export-state/2"


class Resumable:
    """The save/resume half of BundleWriter: its state in the work directory, durable at each save."""

    def save(self, resume_at: int) -> None:
        """Make what was fed so far durable, so that `resume` continues from log offset `resume_at`.

        The spool and the append-only files of hashes and chain_seqs are flushed and fsynced first, then
        state.json replaces the previous one atomically: a crash at any point leaves the last saved state
        whole, and bytes written after it are cut off by `resume`.
        """
        d = self.workdir
        self._spool.flush()
        os.fsync(self._spool.fileno())
        with open(d / "hashes.bin", "ab") as f:
            f.write(self.hashes[self._saved["hashes"]:])
            f.flush()
            os.fsync(f.fileno())
        with open(d / "seqs.bin", "ab") as f:
            f.write(_pairs(self.seqs, self.ends, self._saved["seqs"]))
            f.flush()
            os.fsync(f.fileno())
        self._saved = {"hashes": len(self.hashes), "seqs": len(self.seqs)}
        sm = self.summary
        state = {"format": STATE_FORMAT, "tenant": self.tenant, "scope": self.scope, "since_size": self.since_size,
                 "resume_at": resume_at, "head_seq": self.head_seq, "head_hash": self.head_hash,
                 "written": self._written, "hashes": len(self.hashes), "seqs": len(self.seqs),
                 "checkpoints": self.checkpoints, "records": self.records, "pending": self._pending,
                 "selector": self.selector.state(),
                 "summary": {"count": sm.count, "runs": sorted(sm.runs), "aggregates": sorted(sm.aggregates),
                             "subjects": sorted(sm.subjects), "kids": sorted(sm.kids), "first": sm.first,
                             "last": sm.last}}
        tmp = d / (STATE + ".tmp")
        tmp.write_bytes(json.dumps(state, ensure_ascii=False).encode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, d / STATE)

    @classmethod
    def resume(cls, tenant: str, scope: dict[str, Any], workdir: Path,
               since_size: int | None = None) -> tuple[BundleWriter, int] | None:
        """The writer as last saved in `workdir` and the log offset to continue from; None when there is no saved
        state for this very export (another tenant, scope or --since-size, or another format), or it is unreadable."""
        d = Path(workdir)
        try:
            state = json.loads((d / STATE).read_bytes())
            if (state.get("format"), state.get("tenant"), state.get("scope"), state.get("since_size")) != (
                    STATE_FORMAT, tenant, scope, since_size):
                return None
            hashes = (d / "hashes.bin").read_bytes()[:state["hashes"]]
            pairs = (d / "seqs.bin").read_bytes()[:state["seqs"] * 16]
            if len(hashes) != state["hashes"] or len(pairs) != state["seqs"] * 16 or \
                    (d / "scope.jsonl").stat().st_size < state["written"]:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        writer = cls(tenant, scope, d, since_size, _resuming=True)
        writer._spool.truncate(state["written"])
        writer._spool.seek(state["written"])
        for name, keep in (("hashes.bin", len(hashes)), ("seqs.bin", len(pairs))):
            os.truncate(d / name, keep)
        both = array("q", pairs)
        writer.seqs, writer.ends = array("q", both[0::2]), array("q", both[1::2])
        writer.hashes = bytearray(hashes)
        writer._written, writer._saved = state["written"], {"hashes": len(hashes), "seqs": len(writer.seqs)}
        writer.head_seq, writer.head_hash = state["head_seq"], state["head_hash"]
        writer.checkpoints, writer.records, writer._pending = state["checkpoints"], state["records"], state["pending"]
        writer.selector.restore(state["selector"])
        sm = state["summary"]
        writer.summary = Summary(sm["count"], set(sm["runs"]), set(sm["aggregates"]), set(sm["subjects"]),
                                 set(sm["kids"]), sm["first"], sm["last"])
        return writer, state["resume_at"]


def _pairs(seqs: array, ends: array, start: int) -> bytes:
    """(chain_seq, spool end) pairs from index `start`, interleaved, as seqs.bin holds them."""
    both = array("q")
    for seq, end in zip(seqs[start:], ends[start:]):
        both.append(seq)
        both.append(end)
    return both.tobytes()
