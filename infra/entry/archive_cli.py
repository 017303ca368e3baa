"""`runledger verify-archive`: check the archive projection's directories offline (schemas/tiles_verify.py, docs/archive.md).

Exit 0: every tenant archive checked verifies. 1: a check failed; each problem is printed at its place (a
file path relative to the tenant's directory, and an index or line in it). 2: the input is unusable (no such
directory, no tenant archive in it, `--key` neither a vkey nor a file of them).
"""
from pathlib import Path
from typing import Callable

from schemas.bundle import KeyUnusable
from schemas.tiles import ArchiveUnusable
from schemas.tiles_files import ArchiveReport
from schemas.tiles_verify import load_keys, verify_archive

Echo = Callable[..., None]   # typer.echo(message, err=False)


def summary(r: ArchiveReport) -> str:
    unsigned = (f"; chain_seq {r.checkpoint_size + 1}..{r.size} link to it but no signed checkpoint covers them yet"
                if r.checkpoint_size is not None and r.size > r.checkpoint_size else "")
    return (f"OK archive {r.path}: tenant {r.tenant}, {r.size} entries; checkpoint size {r.checkpoint_size} signed by "
            f"{r.key}, whose root the tiles give; every tile, entry bundle and sidecar line checks ({r.envelopes} "
            f"envelopes, {r.tombstones} tombstones of swept runs, {r.checkpoints} recorded checkpoints the tiles "
            f"agree with){unsigned}")


def verify(directory: Path, key: str, tenant: str | None, echo: Echo) -> int:
    try:
        keys = load_keys(key)
        reports = verify_archive(directory, keys, tenant)
    except (KeyUnusable, ArchiveUnusable) as error:
        echo(f"error: {error}", err=True)
        return 2
    failed = False
    for r in reports:
        for warning in r.warnings:
            echo(f"warning: {r.path}: {warning}", err=True)
        if r.ok:
            echo(summary(r))
            continue
        failed = True
        more = f" (and {r.dropped} more)" if r.dropped else ""
        echo(f"FAILED archive {r.path}: tenant {r.tenant}, {len(r.problems)} problems{more}")
        for problem in r.problems:
            echo(f"  {problem}")
    return 1 if failed else 0
