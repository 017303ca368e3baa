"""The archive (projectors/archive.py, docs/archive.md) checked against the chain: a tenant's tlog-tiles files.

The head is the archive's own position (`.runledger/<prefix>/partitions/<p>.json`: the tenant's archived size,
its partition's next offset, its hold), read first. The archive writes its files before its position, so the
files are at least that far, and a poll in progress may have written more: what the head needs must be there,
what lies past it may be, and must be the chain's if it is. At a head of `applied` events the public files hold
every full bundle and the entries up to the latest checkpoint it applied (`ArchivePlan.published`); the rest
waits in its private journal, which is not checked here.

Compared with the chain, bundle by bundle (the widest version of each: the full file, else its widest partial):

* `entries`: entry i of tile/entries/<N> is the hash of chain_seq N·256 + i + 1;
* `events`: line i of events/<N> is the chain's envelope as RFC 8785 JSON, or, for an event of a run family a
  sweep naming the archive has removed (a sweep the head has applied), that sweep's tombstone of its hash; the
  tombstone of a sweep past the head is accepted too (a poll in progress writes it first);
* `checkpoint`: the note of a checkpoint.signed of the chain, no older than the latest the head applied.

A file the head needs that is not there is one problem, named by its path; a row is named by its chain_seq.
Then schemas/tiles_verify.py `verify_tenant` checks the files on their own (every tile recomputed from the entries,
partial versions, the checkpoint's signature under the keys the chain's checkpoints name, the recorded roots,
the layout) and what it finds is folded in by the same names, leaving out what the comparison named already.
The files are read without a snapshot, so a problem must be seen by both looks the job takes.
"""
import asyncio
import json
import os
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from domain.text import escaped
from infra.adapters.kafka import partition_for
from projectors.archive import ArchiveProjection
from projectors.verification import Diff, Expected, Key, Kind, Live, ModelVerdict, Problem, key_of
from projectors.verification_checks import Check
from projectors.verification_expect import ArchivePlan, archive_lines
from projectors.verification_stores import Cut
from projectors.verification_chain import TenantChain
from schemas.notes import Verifier
from schemas.tiles import CHECKPOINT, WIDTH, decode_bundle, entries_path, events_path, parse_path
from schemas.tiles_verify import verify_tenant

PATHS = {"entries": entries_path, "events": events_path}
COLUMNS = {"entries": ("hash",), "events": ("hash", "line")}
DETAIL = 1000  # characters of a structural problem's message kept
QUOTED = re.compile(r"(?<!\w)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")  # a repr() of what a file holds
EXTRA = ("not a file of the tlog-tiles layout", "not part of a tenant's archive")


def archive_cut(archive: ArchiveProjection, tenant_id: str, partitions: int) -> Cut:
    """Where the archive stands in the tenant's chain: its position files (each written whole, by a rename)."""
    states = {}
    for path in sorted((archive.private / "partitions").glob("*.json")):
        try:
            state = json.loads(path.read_bytes())
        except FileNotFoundError:
            continue
        states[state["partition"]] = state
    applied, held = 0, None
    for state in states.values():
        if tenant_id in state["tenants"]:
            applied = state["tenants"][tenant_id]["size"]
        if tenant_id in state["held"]:
            held = state["held"][tenant_id]["chain_seq"]
    own = states.get(partition_for(tenant_id, partitions))
    return Cut(applied, own["next_offset"] if own else None, held)


@dataclass(frozen=True)
class Version:
    """The widest version of one kind of a bundle, read: its entries or lines, or why it has none."""
    rel: str
    width: int
    items: list[bytes] | None
    flaw: str = ""


def versions_of(base: Path) -> dict[tuple[str, int], set[int]]:
    """(kind, bundle) → the widths of its files under the tenant's directory (entry bundles and sidecar only)."""
    found: dict[tuple[str, int], set[int]] = {}
    for top in ("tile/entries", "events"):
        for dirpath, _, names in os.walk(base / top):
            for name in names:
                place = parse_path(Path(dirpath, name).relative_to(base).as_posix())
                if place is not None and place.kind in PATHS:
                    found.setdefault((place.kind, place.n), set()).add(place.width)
    return found


def read_version(base: Path, kind: str, n: int, widths: set[int]) -> Version | None:
    """The full file if there is one (a poll may have filled the bundle since the scan), else the widest partial."""
    for width in sorted(widths | {WIDTH}, reverse=True):
        rel = PATHS[kind](n, width)
        try:
            data = (base / rel).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        return Version(rel, width, *parsed(kind, data, width))
    return None


def parsed(kind: str, data: bytes, width: int) -> tuple[list[bytes] | None, str]:
    if kind == "entries":
        try:
            entries = decode_bundle(data)
        except ValueError as error:
            return None, f"not an entry bundle: {error}"
        return (entries, "") if len(entries) == width else (None, f"{len(entries)} entries, not {width}")
    lines = data.split(b"\n")
    if lines[-1] != b"" or len(lines) - 1 != width:
        return None, (f"{len(lines) - 1} newline-terminated lines, not {width}"
                      + ("" if lines[-1] == b"" else " (the last has no newline)"))
    return [line + b"\n" for line in lines[:-1]], ""


def line_hash(line: bytes) -> str | None:
    """The event hash a sidecar line carries (an envelope's or a tombstone's), if it carries one."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value.get("hash") if isinstance(value, dict) and isinstance(value.get("hash"), str) else None


class Places:
    """The problems of one look, and the places (table, key) named, so the structural check names none twice."""

    def __init__(self, verdict: ModelVerdict):
        self.verdict, self.named = verdict, set()

    def add(self, table: str, key: dict, kind: Kind, columns: tuple[str, ...] = (), detail: str = "") -> None:
        self.named.add((table, tuple(key.items())))
        self.verdict.add(Problem(self.verdict.model, table, key, kind, columns, detail))

    def fold(self, message: str) -> None:
        """One problem schemas/tiles_verify.py found, by the comparison's names, unless the comparison named its place.
        Its message is the detail, less what it quotes from a file (a value: it may be anything, another
        tenant's id say); hashes, roots, paths and numbers stay."""
        table, key, kind = structural(message)
        if (table, tuple(key.items())) not in self.named:
            detail = QUOTED.sub("…", message)
            self.add(table, key, kind, detail=escaped(detail if len(detail) <= DETAIL else detail[:DETAIL - 1] + "…"))


def structural(message: str) -> tuple[str, dict, Kind]:
    """The table, key and kind of a verify_tenant problem: `<path>[ line i (chain_seq n)]: what`, or
    `chain_seq n: what`. An entry or sidecar line is named by its chain_seq, any other file by its path."""
    if found := re.match(r"chain_seq (\d+): ", message):
        return "entries", {"chain_seq": int(found[1])}, "mismatched"
    path = re.match(r"[^\s:]*", message)[0]
    what = message.split(": ", 1)[-1]
    table = ("checkpoint" if path == CHECKPOINT else "entries" if path.startswith("tile/entries/")
             else "events" if path.startswith("events/") else "tiles" if path.startswith("tile/") else "files")
    kind: Kind = ("missing" if what.startswith("missing") else
                  "extra" if what.startswith(EXTRA) or what.startswith("beyond the tree of") else "mismatched")
    if what.startswith(EXTRA):
        table = "files"
    seq = re.search(r"\(chain_seq (\d+)\)", message)
    if seq and table in ("entries", "events"):
        return table, {"chain_seq": int(seq[1])}, kind
    return table, {"path": path}, kind


class FileDiff(Diff):
    """One file's rows against the chain's, keyed by chain_seq: each problem noted, and said where in the file."""

    def __init__(self, places: Places, table: str, version: Version):
        super().__init__(places.verdict, table, ("chain_seq",), COLUMNS[table])
        self.places, self.version = places, version

    def problem(self, key: Key, kind: Kind, columns: tuple[str, ...] = (), detail: str = "") -> None:
        i = (key[0] - 1) % WIDTH
        where = f"entry {i} of {self.version.rel}" if self.table == "entries" else f"line {i + 1} of {self.version.rel}"
        self.places.add(self.table, key_of(self.key_names, key), kind, columns, f"{detail} ({where})")


class ArchiveCheck(Check):
    live: ArchiveProjection

    async def head(self, tenant_id: str) -> Cut:
        return await asyncio.to_thread(archive_cut, self.live, tenant_id, self.partitions)

    async def verify(self, chain: TenantChain, verdict: ModelVerdict) -> None:
        t = chain.tenant_id
        cut = await self.head(t)  # before the files: they are at least as far as the position
        chain = await self.stand(cut, chain, verdict)
        base = self.live.root / t
        places = Places(verdict)
        if not await asyncio.to_thread(base.is_dir):
            plan = ArchivePlan(cut.applied).count(self.envelopes(chain))
            if plan.published:
                signed = f" and the checkpoint of size {plan.checkpoint[1]}" if plan.checkpoint else ""
                places.add("directory", {"tenant_id": t}, "missing",
                           detail=f"no directory of the tenant under the archive root; the archive has applied its "
                                  f"chain to chain_seq {cut.applied}, so it publishes chain_seq 1 to "
                                  f"{plan.published}{signed}")
            return
        versions = await asyncio.to_thread(versions_of, base)
        held = max([n * WIDTH + w for (_, n), widths in versions.items() for w in widths], default=0)
        if held > chain.size and chain.broken is None:
            await self.chains.extend()  # a poll in progress wrote events appended since the chain was read
        plan = ArchivePlan(cut.applied).count(self.envelopes(chain))
        await self.bundles(base, chain, plan, versions, places, held)
        await self.checkpoint(base, chain, plan, places)
        keys = [Verifier.from_vkey(k) for k in plan.keys]
        report = await asyncio.to_thread(verify_tenant, base, keys, t)
        for message in report.problems:
            if message != f"{CHECKPOINT}: missing" or plan.checkpoint is not None:  # none is due before the first
                places.fold(message)
        if report.dropped:
            verdict.mismatched += report.dropped
            verdict.dropped += report.dropped

    async def bundles(self, base: Path, chain: TenantChain, plan: ArchivePlan,
                      versions: dict[tuple[str, int], set[int]], places: Places, held: int) -> None:
        rows = archive_lines(self.envelopes(chain), plan)
        for n in range((max(held, chain.size) + WIDTH - 1) // WIDTH):
            events = list(islice(rows, WIDTH))  # the chain's events of bundle n (fewer at its end)
            need = min(WIDTH, max(0, plan.published - n * WIDTH))  # entries the head publishes in it
            for table in ("entries", "events"):
                version = await asyncio.to_thread(read_version, base, table, n, versions.get((table, n), set()))
                await self.bundle(table, n, need, version, events, plan, places)

    async def bundle(self, table: str, n: int, need: int, version: Version | None, events: list, plan: ArchivePlan,
                     places: Places) -> None:
        first = n * WIDTH + 1
        if version is not None and version.items is None:
            places.add(table, {"path": version.rel}, "mismatched", detail=version.flaw)
            return
        have = version.width if version is not None else 0
        if have < need:
            widest = f"; its widest version holds {have}" if have else ""
            places.add(table, {"path": PATHS[table](n, need)}, "missing",
                       detail=f"the archive has applied its chain to chain_seq {plan.applied}, so it publishes "
                              f"chain_seq {first} to {first + need - 1} here{widest}")
        if version is None:
            return
        required = first + min(need, have) - 1
        if table == "entries":
            expected = [Expected((env["chain_seq"],), (bytes.fromhex(env["hash"]),),
                                 "required" if env["chain_seq"] <= required else "optional") for env, _, _ in events]
            live = [Live((first + i,), (entry,)) for i, entry in enumerate(version.items)]
        else:
            expected = [Expected((env["chain_seq"],), (env["hash"], line),
                                 "required" if env["chain_seq"] <= required else "optional",
                                 also=(env["hash"], later) if later is not None else None)
                        for env, line, later in events]
            live = [Live((first + i,), (line_hash(line), line)) for i, line in enumerate(version.items)]
        await FileDiff(places, table, version).run(expected, live)

    async def checkpoint(self, base: Path, chain: TenantChain, plan: ArchivePlan, places: Places) -> None:
        """The published note: one the chain recorded, and not older than the latest the head applied."""
        want = plan.checkpoint
        try:
            note = await asyncio.to_thread((base / CHECKPOINT).read_bytes)
        except (FileNotFoundError, IsADirectoryError):
            if want is not None:
                places.add("checkpoint", {"path": CHECKPOINT}, "missing",
                           detail=f"the archive has applied the checkpoint.signed at chain_seq {want[0]} (size "
                                  f"{want[1]}); no file publishes it")
            return
        places.verdict.rows += 1
        found = plan.note(note)
        if found is None and chain.broken is None:
            await self.chains.extend()  # a poll in progress may publish a checkpoint appended since
            found = ArchivePlan(plan.applied).count(self.envelopes(chain)).note(note)
        if found is None:
            places.add("checkpoint", {"path": CHECKPOINT}, "mismatched", ("note",),
                       "not the note of any checkpoint.signed of the chain")
        elif want is not None and found[1] < want[1]:
            places.add("checkpoint", {"path": CHECKPOINT}, "mismatched", ("note",),
                       f"the note of chain_seq {found[0]} (size {found[1]}), older than the checkpoint the archive "
                       f"has applied at chain_seq {want[0]} (size {want[1]})")
