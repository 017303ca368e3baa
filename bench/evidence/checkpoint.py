"""Phase 5: sign and verify the checkpoint of the tree (C2SP signed note, Ed25519)."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.evidence.args import TARGETS
from bench.evidence.timing import rate_row, timed
from bench.evidence.trees import Tree
from bench.lib.report import Report
from schemas import merkle as m
from schemas.notes import Checkpoint, NoteError, Signer, tenant_origin


def checkpoint(tree: Tree, args, report: Report) -> None:
    phase = "5 checkpoint"
    signer = Signer(tenant_origin("bench", "acme"), Ed25519PrivateKey.generate())
    verifier = signer.verifier
    cp = Checkpoint(signer.name, tree.n, tree.root or m.root(tree.hashes))
    note = cp.sign([signer])
    try:
        opened = Checkpoint.open(note, [verifier], signer.name)
    except NoteError as error:
        report.errors.append(f"the benchmark's own checkpoint does not open: {error}")
        return
    if opened != (cp, [verifier]):
        report.errors.append(f"the checkpoint opened as {opened[0]}, not {cp}")
    report.info(phase, "signed note", f"{len(note):,} bytes: {note.decode().splitlines()[0]} / {tree.n} / root / "
                                      f"1 signature; vkey {len(signer.vkey)} chars")
    rate_row(report, phase, "sign (text + Ed25519 + note)", timed(lambda i: cp.sign([signer]), args.duration,
                                                                   "checkpoints"), "checkpoint", TARGETS["sign"])
    failed = [0]

    def verify(i: int) -> None:
        failed[0] += Checkpoint.open(note, [verifier], signer.name)[0] != cp
    rate_row(report, phase, "open (parse + verify + parse checkpoint)", timed(verify, args.duration, "checkpoints"),
             "checkpoint", TARGETS["open"])
    if failed[0]:
        report.errors.append(f"{failed[0]} checkpoint verifications failed in the timed window")
