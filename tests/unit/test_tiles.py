"""C2SP tlog-tiles: paths and tile math against the spec and schemas/merkle.py, the archive projection on a
directory (layout, exact bytes, replays, restarts, crashes, retention), and the offline verifier naming every
tampered place (schemas/tiles.py, projectors/archive.py, `runledger verify-archive`)."""
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.register_assert_rewrite("tests.projection_contract")

from domain import retention  # noqa: E402
from domain.retention import Rules  # noqa: E402
from infra.entry.cli import app  # noqa: E402
from projectors.archive import ArchiveProjection  # noqa: E402
from projectors.archive_files import ArchiveConflict  # noqa: E402
from projectors.base import Batch  # noqa: E402
from schemas import merkle  # noqa: E402
from schemas.bundle import jcs  # noqa: E402
from schemas.envelope import GENESIS_HASH, compute_hash, seal  # noqa: E402
from schemas.merkle_trees import TreeStore  # noqa: E402
from schemas.notes import Checkpoint, Signer, tenant_origin  # noqa: E402
from schemas.tiles import (Place, TileNodes, decode_bundle, encode_bundle, entries_path, events_path,  # noqa: E402
                           index_path, parse_path, subtree_hash, tile_path, tree_root, tree_tiles)
from schemas.tiles_verify import load_keys, verify_archive  # noqa: E402
from tests.projection_contract import Crash, ProjectionContract  # noqa: E402
from tests.unit.harness import ADMIN, Harness  # noqa: E402
from tests.unit.test_envelope import unsealed  # noqa: E402

T = "acme"
SIGNER = Signer(tenant_origin("test", T), bytes([7] * 32))
OTHER = Signer(tenant_origin("test", T), bytes([8] * 32))


# -- paths and tile math -------------------------------------------------------------------------------

def test_paths_are_the_specs():
    assert [index_path(n) for n in (0, 5, 999, 1000, 1001, 1234067, 10 ** 6)] == \
        ["000", "005", "999", "x001/000", "x001/001", "x001/x234/067", "x001/x000/000"]
    assert (tile_path(0, 1234067), tile_path(0, 1234067, 8), tile_path(63, 0, 255)) == \
        ("tile/0/x001/x234/067", "tile/0/x001/x234/067.p/8", "tile/63/000.p/255")
    assert (entries_path(1234067, 8), entries_path(0), events_path(3), events_path(1000, 17)) == \
        ("tile/entries/x001/x234/067.p/8", "tile/entries/000", "events/003", "events/x001/000.p/17")
    assert [parse_path(p) for p in ("tile/0/x001/x234/067.p/8", "tile/entries/x001/x234/067", "events/x001/000.p/255",
                                    "tile/12/003")] == \
        [Place("tile", 0, 1234067, 8), Place("entries", 0, 1234067), Place("events", 0, 1000, 255),
         Place("tile", 12, 3)]
    not_paths = ["tile/0/x000/005", "tile/0/5", "tile/0/0005", "tile/64/000", "tile/01/000", "tile/0/000.p/0",
                 "tile/0/000.p/256", "tile/0/000.p/08", "tile/0/x001", "tile/0/001/002", "tile/entries/000/x001",
                 "tile/x/000", "checkpoint", "events/000.p", "tile/0/000.p", "tile/0/000.p/3/4", "events/x01/000"]
    assert [parse_path(p) for p in not_paths] == [None] * len(not_paths)
    for bad in (lambda: tile_path(0, 1, 0), lambda: tile_path(0, 1, 257), lambda: tile_path(64, 0),
                lambda: index_path(-1)):
        with pytest.raises(ValueError):
            bad()


def test_the_tiles_of_a_tree_are_the_specs_examples():
    tiles = tree_tiles(70_000)
    assert Counter((p.level, p.full) for p in tiles) == {(0, True): 273, (0, False): 1, (1, True): 1, (1, False): 1,
                                                          (2, False): 1}
    assert [(p.level, p.n, p.width) for p in tiles if not p.full] == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert tree_tiles(256) == [Place("tile", 0, 0), Place("tile", 1, 0, 1)]
    assert (tree_tiles(0), tree_tiles(1), tree_tiles(255)) == ([], [Place("tile", 0, 0, 1)], [Place("tile", 0, 0, 255)])
    assert tree_tiles(65_536)[-3:] == [Place("tile", 0, 255), Place("tile", 1, 0), Place("tile", 2, 0, 1)]


def leaves_of(size: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size)]


def tiles_of(leaf_hashes: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every tile of the tree of these leaf hashes, built straight from the spec's definition."""
    out, row, level = {}, b"".join(leaf_hashes), 0
    while row:
        for n in range(0, len(row), 8192):
            out[(level, n // 8192)] = row[n:n + 8192]
        row = b"".join(subtree_hash(row[n:n + 8192]) for n in range(0, len(row) - 8191, 8192))
        level += 1
    return out


@pytest.mark.parametrize("size", [0, 1, 2, 3, 255, 256, 257, 511, 512, 513, 1000, 65_535, 65_536, 65_537])
def test_the_root_from_the_tiles_is_the_merkle_root(size):
    leaves = leaves_of(size)
    tiles = tiles_of([merkle.leaf_hash(v) for v in leaves])
    assert sorted((p.level, p.n, p.width) for p in tree_tiles(size)) == \
        sorted((level, n, len(data) // 32) for (level, n), data in tiles.items())
    assert tree_root(lambda level, n, needed: tiles[(level, n)], size) == merkle.root(leaves)


def test_every_earlier_root_and_proof_come_from_the_tiles_of_a_larger_tree():
    leaves = leaves_of(600)
    store = TreeStore.from_leaves(leaves)
    tiles = tiles_of([merkle.leaf_hash(v) for v in leaves])
    nodes = TileNodes(lambda level, n, needed: tiles[(level, n)])
    assert [tree_root(nodes, k) for k in range(601)] == [store.root(k) for k in range(601)]
    for index, size in ((0, 1), (17, 256), (255, 257), (300, 513), (599, 600)):
        assert merkle.prove_inclusion(nodes.node, index, size) == store.inclusion_proof(index, size)
    for old, new in ((1, 600), (256, 512), (300, 599)):
        assert merkle.prove_consistency(nodes.node, old, new) == store.consistency_proof(old, new)


def test_entry_bundles_are_uint16_length_prefixed_and_a_cut_one_is_named():
    assert encode_bundle([b"\xaa" * 32, b"", b"xyz"]) == b"\x00\x20" + b"\xaa" * 32 + b"\x00\x00" + b"\x00\x03xyz"
    assert decode_bundle(encode_bundle([b"\xaa" * 32, b"", b"xyz"])) == [b"\xaa" * 32, b"", b"xyz"]
    for data, message in ((b"\x00", "a length prefix is cut short at byte 0"),
                          (b"\x00\x01a\x00\x05abc", "entry 1 at byte 3 says 5 bytes; 3 are left")):
        with pytest.raises(ValueError) as refused:
            decode_bundle(data)
        assert str(refused.value) == message


# -- chains and archives ------------------------------------------------------------------------------

def checkpoint_fields(chain: list[dict], signer: Signer = SIGNER, root: bytes | None = None) -> dict:
    size, tenant = len(chain), signer.name.rsplit("/", 1)[1]
    root = root if root is not None else merkle.root([bytes.fromhex(e["hash"]) for e in chain])
    return {"type": "checkpoint.signed", "schema_version": 1, "aggregate_type": "checkpoint",
            "aggregate_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"runledger:checkpoints:{tenant}")),
            "actor": {"subject": "runledger:checkpoints", "roles": ["system"]}, "command_id": None,
            "causation_id": None, "correlation_id": None,
            "payload": {"origin": signer.name, "size": size, "root": base64.b64encode(root).decode(),
                        "note": Checkpoint(signer.name, size, root).sign([signer]).decode(), "key": signer.vkey}}


def chain_of(n: int, every: int = 50, signer: Signer = SIGNER) -> list[dict]:
    """n events of the signer's tenant; every `every`-th one a checkpoint.signed of the chain before it."""
    chain: list[dict] = []
    tenant = signer.name.rsplit("/", 1)[1]
    while len(chain) < n:
        seq, prev = len(chain) + 1, chain[-1]["hash"] if chain else GENESIS_HASH
        fields = unsealed(seq, prev, note=f"e{seq}")
        if every and seq % every == 0:
            fields.update(checkpoint_fields(chain, signer))
        chain.append(seal({**fields, "tenant_id": tenant, "recorded_at": f"2026-11-22T10:{seq // 60 % 60:02d}:"
                                                                       f"{seq % 60:02d}.000000Z"}))
    return chain


CHAIN = chain_of(600)


async def archive(root: Path, chain: list[dict], step: int, twice: bool = False, start: int = 0,
                  prefix: str = "test") -> ArchiveProjection:
    """Apply chain[start:] in polls of `step` (each delivered twice, if asked) from where the position says."""
    projection = await ArchiveProjection(root, prefix).open()
    for lo in range(start, len(chain), step):
        poll = [Batch(0, chain[lo:lo + step], min(lo + step, len(chain)))]
        for _ in range(2 if twice else 1):
            await projection.apply(poll)
    return projection


def public(root: Path, tenant: str = T) -> dict[str, bytes]:
    base = root / tenant
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def everything(root: Path) -> dict[str, bytes]:
    """Every file under the root but the temp directory, with the positions' wall-clock stamps blanked."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".runledger/tmp/"):
            data = p.read_bytes()
            if "/partitions/" in rel:
                state = json.loads(data)
                state["updated_at"] = None
                state["held"] = {t: {**h, "held_at": None} for t, h in state["held"].items()}
                data = json.dumps(state, sort_keys=True).encode()
            out[rel] = data
    return out


def leaf_row(chain: list[dict]) -> bytes:
    return b"".join(merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in chain)


def sizes_signed(chain: list[dict]) -> list[int]:
    return [e["payload"]["size"] for e in chain if e["type"] == "checkpoint.signed"]


async def test_a_chain_becomes_its_tlog_tiles_byte_for_byte_and_verifies(tmp_path):
    projection = await archive(tmp_path, CHAIN, 37)
    files = public(tmp_path)
    assert sizes_signed(CHAIN) == list(range(49, 600, 50))
    open_widths = [37, 87]   # the checkpoints of sizes 549 and 599 in the open bundle 2 (entries 512..767)
    assert sorted(files) == sorted(
        ["checkpoint", "tile/0/000", "tile/0/001", "tile/entries/000", "tile/entries/001", "events/000", "events/001",
         "tile/1/000.p/1", "tile/1/000.p/2"]
        + [f"{kind}/002.p/{w}" for kind in ("tile/0", "tile/entries", "events") for w in open_widths])
    for n in (0, 1):
        bundle = CHAIN[n * 256:(n + 1) * 256]
        assert files[tile_path(0, n)] == leaf_row(bundle)
        assert files[entries_path(n)] == encode_bundle(bytes.fromhex(e["hash"]) for e in bundle)
        assert files[events_path(n)] == b"".join(jcs(e) + b"\n" for e in bundle)
    for w in open_widths:
        bundle = CHAIN[512:512 + w]
        assert (files[tile_path(0, 2, w)], files[entries_path(2, w)], files[events_path(2, w)]) == \
            (leaf_row(bundle), encode_bundle(bytes.fromhex(e["hash"]) for e in bundle),
             b"".join(jcs(e) + b"\n" for e in bundle))
    level1 = [subtree_hash(files[tile_path(0, n)]) for n in (0, 1)]
    assert (files["tile/1/000.p/1"], files["tile/1/000.p/2"]) == (level1[0], level1[0] + level1[1])
    assert files["checkpoint"] == CHAIN[599]["payload"]["note"].encode()
    assert ({p: (pos.next_offset, pos.last_recorded_at) for p, pos in (await projection.positions()).items()},
            await projection.head(T)) == ({0: (600, CHAIN[-1]["recorded_at"])}, (600, CHAIN[-1]["hash"]))
    assert projection.envelopes(T) == CHAIN

    [report] = verify_archive(tmp_path, [SIGNER.verifier])
    signed_root = merkle.root([bytes.fromhex(e["hash"]) for e in CHAIN[:599]])
    assert (report.ok, report.problems, report.warnings, report.tenant, report.size, report.checkpoint_size,
            report.root, report.key, report.envelopes, report.tombstones, report.checkpoints) == \
        (True, [], [], T, 599, 599, signed_root, f"{SIGNER.name}+{SIGNER.key_id:08x}", 599, 0, 11)


async def test_poll_boundaries_replays_and_restarts_change_no_byte(tmp_path):
    one_go = tmp_path / "one"
    await archive(one_go, CHAIN, len(CHAIN))
    expected = everything(one_go)
    for name, step, twice in (("sevens", 7, False), ("twice", 37, True), ("fifties", 50, False)):
        await archive(tmp_path / name, CHAIN, step, twice)
        assert everything(tmp_path / name) == expected, name
    # a restart: one writer stops after 300 events, a new one resumes from the position the files keep
    restarted = tmp_path / "restarted"
    await archive(restarted, CHAIN[:300], 64)
    resumed = await ArchiveProjection(restarted, "test").open()
    offset = (await resumed.positions())[0].next_offset
    assert (offset, await resumed.head(T)) == (300, (300, CHAIN[299]["hash"]))
    await archive(restarted, CHAIN, 41, start=offset)
    assert everything(restarted) == expected
    # and the whole log replayed over a finished archive (its position lost) rewrites nothing
    for state in (restarted / ".runledger" / "test" / "partitions").iterdir():
        state.unlink()
    before = {p: os.stat(restarted / T / p).st_mtime_ns for p in public(restarted)}
    await archive(restarted, CHAIN, 100)
    assert (everything(restarted), {p: os.stat(restarted / T / p).st_mtime_ns for p in public(restarted)}) == \
        (expected, before)


class Fused(ArchiveProjection):
    """Its next write stops after `fuse` events, as a process killed mid-poll would."""
    fuse: int | None = None

    def write(self, session, envelopes):
        fuse, self.fuse = self.fuse, None
        super().write(session, envelopes if fuse is None else envelopes[:fuse])
        if fuse is not None:
            for tree in session.trees.values():
                tree.finish()   # what it wrote of the poll is on disk; its position is not
            raise Crash(f"the write stopped after {fuse} events")


async def test_a_poll_that_stops_mid_way_leaves_files_the_resumed_writer_makes_exact(tmp_path):
    await archive(tmp_path / "one", CHAIN, len(CHAIN))
    expected = everything(tmp_path / "one")
    root = tmp_path / "crashed"
    writer = await Fused(root, "test").open()
    done = 0
    for crash_at, fuse in ((200, 100), (470, 42), (590, 9)):   # across a full bundle, a checkpoint, the journal
        await writer.apply([Batch(0, CHAIN[done:crash_at], crash_at)])
        done = crash_at
        writer.fuse = fuse
        with pytest.raises(Crash):
            await writer.apply([Batch(0, CHAIN[done:done + 80], done + 80)])
        writer = await Fused(root, "test").open()   # a new process: what the position says, and nothing else
        assert (await writer.positions())[0].next_offset == done
    journal = root / ".runledger" / "test" / "open" / f"{T}.jsonl"
    with open(journal, "ab") as torn:
        torn.write(b'{"chain_seq":591,"has')   # a write the crash cut short
    await writer.apply([Batch(0, CHAIN[done:], len(CHAIN))])
    assert everything(root) == expected


async def test_a_crash_after_the_files_before_the_position_replays_to_the_same_bytes(tmp_path, monkeypatch):
    await archive(tmp_path / "one", CHAIN, len(CHAIN))
    expected = everything(tmp_path / "one")
    root = tmp_path / "crashed"
    await archive(root, CHAIN[:250], 250)
    writer = await ArchiveProjection(root, "test").open()

    def lost(*args):
        raise Crash("killed before the position was written")
    monkeypatch.setattr(writer, "_commit", lost)
    with pytest.raises(Crash):
        await writer.apply([Batch(0, CHAIN[250:560], 560)])   # fills bundle 1, signs 299..549: all on disk
    resumed = await ArchiveProjection(root, "test").open()
    assert (await resumed.positions())[0].next_offset == 250
    await archive(root, CHAIN, 77, start=250)
    assert everything(root) == expected


# -- the Projection contract ----------------------------------------------------------------------------

class Notes(ArchiveProjection):
    """The contract's projection: the archive, with a fuse on its row write."""
    fuse: int | None = None

    def write(self, session, envelopes):
        fuse, self.fuse = self.fuse, None
        super().write(session, envelopes if fuse is None else envelopes[:fuse])
        if fuse is not None:
            raise Crash(f"the row write failed after {fuse} rows")


class TestArchiveProjection(ProjectionContract):
    atomic = False   # files, written before the position: the contract is idempotence

    @pytest.fixture(autouse=True)
    def directory(self, tmp_path):
        self.root = tmp_path

    def projection(self, prefix: str) -> Notes:
        return Notes(self.root / prefix, prefix)

    async def writer(self, prefix: str) -> Notes:
        return await self.projection(prefix).open()

    async def rows(self, projection: Notes) -> list[tuple[str, int, str]]:
        return sorted((t, e["chain_seq"], e["payload"]["note"]) for t in "abc" for e in projection.envelopes(t))

    async def test_the_registry_names_generation_1_once_and_then_what_a_swap_named(self, prefix):
        writer = await self.writer(prefix)
        assert await writer.live_generation() == 1
        with pytest.raises(NotImplementedError) as refused:
            await writer.fresh_generation(2)
        partitions = self.root / prefix / ".runledger" / prefix / "partitions"
        assert str(refused.value).startswith("the archive has one generation, its directory: to rebuild it, stop the "
                                             f"projectors, remove {partitions} and start them again")

    async def test_a_swap_moves_readers_to_the_rebuilt_generation_and_stops_the_old_writer(self, prefix):
        pytest.skip("one generation: the archive rebuilds in place (see the case above)")


# -- refusals -------------------------------------------------------------------------------------------

async def test_a_checkpoint_of_another_root_holds_the_tenant_and_changes_nothing(tmp_path):
    projection = await archive(tmp_path, CHAIN[:60], 60)
    before = everything(tmp_path)
    chain = list(CHAIN[:60])
    forged = seal({**unsealed(61, chain[-1]["hash"]), "tenant_id": T, "recorded_at": CHAIN[60]["recorded_at"],
                   **checkpoint_fields(chain, root=bytes(32))})
    wanted = merkle.root([bytes.fromhex(e["hash"]) for e in chain]).hex()
    message = (f"the checkpoint at chain_seq 61 signs root {'00' * 32} for size 60, but tenant acme's archived chain "
               f"has root {wanted} at that size")
    for attempt in (projection.probe, lambda envs: projection.apply([Batch(0, envs, 61)])):
        with pytest.raises(ArchiveConflict) as refused:
            await attempt([forged])
        assert (str(refused.value), projection.deterministic(refused.value)) == (message, True)
    assert everything(tmp_path) == before


async def test_another_deployments_archive_or_a_stray_directory_is_never_touched(tmp_path):
    await archive(tmp_path, CHAIN[:300], 300, prefix="first")
    before = everything(tmp_path)
    other = [seal({**unsealed(1, GENESIS_HASH, note="elsewhere"), "tenant_id": T})]
    second = await ArchiveProjection(tmp_path, "second").open()
    with pytest.raises(ArchiveConflict) as refused:
        await second.apply([Batch(0, other, 1)])
    assert str(refused.value) == (f"{tmp_path / T} is the archive of topic prefix 'first', not of 'second': one "
                                  "archive directory per deployment")
    (tmp_path / "stray" / "tile").mkdir(parents=True)
    with pytest.raises(ArchiveConflict) as refused:
        await second.apply([Batch(0, [seal({**other[0], "tenant_id": "stray"})], 1)])
    assert str(refused.value) == (f"{tmp_path / 'stray'} exists, but no deployment's archive owns it (no "
                                  f"{tmp_path / '.runledger' / 'owners' / 'stray'}): move it aside, or point "
                                  "RUNLEDGER_ARCHIVE_DIR elsewhere")
    assert {k: v for k, v in everything(tmp_path).items() if not k.startswith(".runledger/second/")} == before


async def test_a_full_tile_that_changed_on_disk_holds_the_tenant_when_the_replay_reaches_it(tmp_path):
    await archive(tmp_path, CHAIN[:300], 300)
    tile = tmp_path / T / "tile/0/000"
    tile.write_bytes(b"\x01" + tile.read_bytes()[1:])
    for state in (tmp_path / ".runledger" / "test" / "partitions").iterdir():
        state.unlink()   # the rebuild in place: replay from offset 0 over the files
    projection = await ArchiveProjection(tmp_path, "test").open()
    with pytest.raises(ArchiveConflict) as refused:
        await projection.apply([Batch(0, CHAIN[:300], 300)])
    assert str(refused.value) == ("acme/tile/0/000 exists with other content than this chain gives it; a full tile "
                                  "never changes (another chain's archive in this directory, or an altered file)")


# -- the verifier names each tampered place ------------------------------------------------------------

def at(root: Path, rel: str) -> Path:
    return root / T / rel


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def root_b64(leaf_hashes: bytes, size: int) -> str:
    rows = merkle.levels(leaf_hashes[i:i + 32] for i in range(0, size * 32, 32))
    return base64.b64encode(merkle.range_root(merkle.row_reader(rows), 0, size)).decode()


def problems(root: Path, keys=(SIGNER.verifier,)) -> list[str]:
    [report] = verify_archive(root, list(keys))
    assert report.ok == (not report.problems)
    return report.problems


def where(seq: int) -> str:
    """Where the public sidecar holds chain_seq `seq` (of CHAIN's archive: full bundles 0-1, bundle 2 up to 87)."""
    n, i = divmod(seq - 1, 256)
    return f"{events_path(n) if n < 2 else events_path(2, 87)} line {i + 1} (chain_seq {seq})"


def signed_root(seq: int) -> str:
    return CHAIN[seq - 1]["payload"]["root"]


@pytest.fixture
async def built(tmp_path) -> Path:
    await archive(tmp_path, CHAIN, 37)
    assert problems(tmp_path) == []
    return tmp_path


async def test_a_deleted_tile_is_named_with_the_checkpoints_it_leaves_unprovable(built):
    at(built, "tile/0/001").unlink()
    assert problems(built) == ["tile/0/001: missing"] + [
        f"{where(seq)}: it signs root {signed_root(seq)} for size {seq - 1}, but the root cannot be computed from the "
        f"tiles (tile/0/001 is missing)" for seq in (300, 350, 400, 450, 500)]


async def test_a_deleted_partial_tile_of_a_checkpoint_is_named(built):
    at(built, "tile/0/002.p/37").unlink()
    at(built, "tile/entries/002.p/37").unlink()
    assert problems(built) == ["tile/0/002.p/37: missing (the checkpoint of size 549 needs it)",
                               "tile/entries/002.p/37: missing (the checkpoint of size 549 needs it)"]


async def test_a_flipped_byte_in_a_tile_is_named_and_the_root_it_changes(built):
    flip(at(built, "tile/0/002.p/87"), 50 * 32 + 7)
    row = bytearray(leaf_row(CHAIN[:599]))
    row[(512 + 50) * 32 + 7] ^= 0x01
    assert problems(built) == [
        "tile/0/002.p/87: hash 50 is not the hash of entry 50 of tile/entries/002.p/87 (chain_seq 563)",
        f"checkpoint: the root of size 599 from the tiles is {root_b64(bytes(row), 599)}, but the checkpoint signs "
        f"{signed_root(600)}"]


async def test_a_flipped_byte_in_a_level_1_tile_is_named(built):
    flip(at(built, "tile/1/000.p/2"), 32 + 3)
    level1 = bytearray(subtree_hash(leaf_row(CHAIN[:256])) + subtree_hash(leaf_row(CHAIN[256:512])))
    level1[32 + 3] ^= 0x01

    def bad_root(size: int) -> str:   # the first 512 leaves under the altered level-1 hash, then the rest
        rest = leaf_row(CHAIN[512:size])
        right = merkle.range_root(merkle.row_reader(merkle.levels(rest[i:i + 32] for i in range(0, len(rest), 32))),
                                  0, size - 512)
        return base64.b64encode(merkle.node_hash(merkle.node_hash(level1[:32], level1[32:]), right)).decode()
    assert problems(built) == [
        "tile/1/000.p/2: hash 1 is not the hash of tile/0/001",
        f"checkpoint: the root of size 599 from the tiles is {bad_root(599)}, but the checkpoint signs "
        f"{signed_root(600)}",
        f"{where(550)}: it signs root {signed_root(550)} for size 549, but the root from the tiles is {bad_root(549)}"]


async def test_a_flipped_byte_in_an_entry_bundle_is_named(built):
    flip(at(built, "tile/entries/001"), 5 * 34 + 2 + 9)
    entry = bytearray(bytes.fromhex(CHAIN[261]["hash"]))
    entry[9] ^= 0x01
    assert problems(built) == [f"tile/entries/001: entry 5 (chain_seq 262) is {entry.hex()}, but line 6 of events/001 "
                               f"and hash 5 of tile/0/001 say {CHAIN[261]['hash']}"]


async def test_a_deleted_entry_bundle_or_sidecar_bundle_is_named(built):
    at(built, "tile/entries/000").unlink()
    at(built, "events/001").unlink()
    assert problems(built) == ["tile/entries/000: missing", "events/001: missing"]


async def test_an_altered_sidecar_line_is_named_by_file_and_line(built):
    path = at(built, "events/001")
    lines = path.read_bytes().split(b"\n")
    lines[9] = lines[9].replace(b'"note":"e266"', b'"note":"e267"')
    path.write_bytes(b"\n".join(lines))
    altered = json.loads(lines[9])
    assert problems(built) == [f"events/001 line 10 (chain_seq 266): the envelope does not re-hash to its hash "
                               f"{CHAIN[265]['hash']} (it hashes to {compute_hash(altered)})"]
    lines[9] = b"{" + lines[9]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError) as error:
        json.loads(lines[9])
    assert problems(built) == [f"events/001 line 10 (chain_seq 266): not JSON ({error.value})"]


async def test_a_cut_sidecar_bundle_is_named(built):
    path = at(built, "events/002.p/87")
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:86]))
    assert problems(built) == ["events/002.p/87: 86 newline-terminated lines, not 87"]


async def test_an_altered_checkpoint_is_named(built):
    note = at(built, "checkpoint")
    good = note.read_bytes()
    at_ = len(good) - 20   # a character of the base64 signature, changed to another one
    note.write_bytes(good[:at_] + (b"A" if good[at_:at_ + 1] != b"A" else b"B") + good[at_ + 1:])
    assert problems(built) == [f"checkpoint: invalid signature for key {SIGNER.name}+{SIGNER.key_id:08x}"]
    note.write_bytes(good.replace(b"\n599\n", b"\n598\n"))
    assert problems(built) == [f"checkpoint: invalid signature for key {SIGNER.name}+{SIGNER.key_id:08x}"]
    note.write_bytes(CHAIN[499]["payload"]["note"].encode())   # an older checkpoint, validly signed
    assert problems(built) == ["checkpoint: it signs size 499, but chain_seq 550 (events/002.p/87) signs the later "
                               "size 549"]
    note.write_bytes(good)
    assert problems(built, [OTHER.verifier]) == [
        f"checkpoint: no signature by a known key: signed by {SIGNER.name}+{SIGNER.key_id:08x}; known keys: "
        f"{OTHER.name}+{OTHER.key_id:08x}"]
    note.unlink()
    assert problems(built) == ["checkpoint: missing"]


async def test_a_stray_file_is_named(built):
    (built / T / "tile" / "0" / "junk").write_bytes(b"x")
    (built / T / "notes.txt").write_bytes(b"x")
    assert problems(built) == ["notes.txt: not part of a tenant's archive (checkpoint, tile/, events/)",
                               "tile/0/junk: not a file of the tlog-tiles layout"]


def cli(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


async def test_verify_archive_exits_0_1_or_2(built, tmp_path):
    (tmp_path / "log.vkey").write_text(f"# the log's key\n{SIGNER.vkey}\n")
    ok = (0, f"OK archive {built / T}: tenant acme, 599 entries; checkpoint size 599 signed by {SIGNER.name}+"
             f"{SIGNER.key_id:08x}, whose root the tiles give; every tile, entry bundle and sidecar line checks (599 "
             "envelopes, 0 tombstones of swept runs, 11 recorded checkpoints the tiles agree with)\n", "")
    assert cli("verify-archive", built, "--key", tmp_path / "log.vkey") == ok
    assert cli("verify-archive", built / T, "--key", SIGNER.vkey) == ok
    assert cli("verify-archive", built, "--key", SIGNER.vkey, "--tenant", T) == ok
    at(built, "tile/0/000").unlink()
    assert cli("verify-archive", built, "--key", SIGNER.vkey) == (
        1, f"FAILED archive {built / T}: tenant acme, 6 problems\n  tile/0/000: missing\n" + "".join(
            f"  {where(seq)}: it signs root {signed_root(seq)} for size {seq - 1}, but the root cannot be computed "
            f"from the tiles (tile/0/000 is missing)\n" for seq in (50, 100, 150, 200, 250)), "")
    assert cli("verify-archive", built, "--key", "runledger/test/acme+00000000+AQ==") == (
        2, "", "error: --key 'runledger/test/acme+00000000+AQ==' is neither a vkey (the vkey's key ID 00000000 is not "
               "that of its name and key) nor a file\n")
    assert cli("verify-archive", built / "nowhere", "--key", SIGNER.vkey) == (
        2, "", f"error: {built / 'nowhere'}: no such directory\n")
    assert cli("verify-archive", built, "--key", SIGNER.vkey, "--tenant", "beta") == (
        2, "", f"error: {built}: no archive of tenant 'beta' ({built / 'beta'} has no checkpoint or tile/)\n")


async def test_a_root_of_several_tenants_verifies_each_under_its_own_key(tmp_path):
    beta = Signer(tenant_origin("test", "beta"), bytes([9] * 32))
    projection = await ArchiveProjection(tmp_path, "test").open()
    acme, other = CHAIN[:300], chain_of(120, 30, beta)
    await projection.apply([Batch(0, acme[:150] + other[:60], 210)])
    await projection.apply([Batch(0, acme[150:], 300), Batch(1, other[60:], 60)])
    assert ({p: pos.next_offset for p, pos in (await projection.positions()).items()},
            await projection.head("acme"), await projection.head("beta")) == \
        ({0: 300, 1: 60}, (300, acme[-1]["hash"]), (120, other[-1]["hash"]))
    (tmp_path / "keys.txt").write_text(f"{SIGNER.vkey}\n\n# beta's\n{beta.vkey}\n")
    reports = verify_archive(tmp_path, load_keys(str(tmp_path / "keys.txt")))
    assert [(r.tenant, r.problems, r.size, r.checkpoint_size) for r in reports] == \
        [("acme", [], 299, 299), ("beta", [], 119, 119)]
    assert [(r.tenant, r.problems) for r in verify_archive(tmp_path, [beta.verifier])] == [
        ("acme", [f"checkpoint: no signature by a known key: signed by {SIGNER.name}+{SIGNER.key_id:08x}; known "
                  f"keys: {beta.name}+{beta.key_id:08x}"]), ("beta", [])]


# -- retention ------------------------------------------------------------------------------------------

def family_story() -> tuple[list[dict], set[int], int]:
    """Run 1 (a tool call, an approval, a cost) starts early and ends after 300 other runs are requested; a
    sweep of the audit class removes its family, and 60 more runs follow. Resealed with a checkpoint every 40
    events, as the processor records them. Returns the chain, run 1's family's chain_seqs and the sweep's."""
    h = Harness(T)
    h.ledger.rules = Rules({"audit": 0, "operational": 0})

    def ok(body, actor=None):
        h.advance(1)
        return h.ok(body, actor) if actor else h.ok(body)
    ok({"type": "SetRetentionPolicy", "record_class": "audit", "days": 0}, ADMIN)
    run = ok({"type": "RequestRun", "agent_id": "swept"})
    ok({"type": "StartRun", "run_id": run})
    call = ok({"type": "RequestToolCall", "run_id": run, "tool": "shell", "risk_tier": "high",
               "params_digest": "0" * 64})
    approval = ok({"type": "RequestApproval", "run_id": run, "tool_call_id": None, "action": "run it",
                   "risk_tier": "high", "required_approvals": 1, "expires_in_seconds": 100000})
    for n in range(300):
        ok({"type": "RequestRun", "agent_id": f"kept-{n}"})
    ok({"type": "GrantApproval", "approval_id": approval, "reason": "fine"}, {"subject": "ann", "roles": ["approver"]})
    ok({"type": "RecordCost", "run_id": run, "provider": "p", "model": "m", "amount_micros": 5, "currency": "USD"})
    ok({"type": "CompleteRun", "run_id": run})
    h.advance(10)
    ok({"type": "SweepRetention", "record_class": "audit"}, ADMIN)
    for n in range(60):
        ok({"type": "RequestRun", "agent_id": f"after-{n}"})
    chain: list[dict] = []
    for env in h.log:
        prev = chain[-1]["hash"] if chain else GENESIS_HASH
        chain.append(seal({**{k: v for k, v in env.items() if k != "hash"}, "chain_seq": len(chain) + 1,
                           "prev_hash": prev}))
        if len(chain) % 40 == 39:
            chain.append(seal({**{k: v for k, v in chain[-1].items() if k != "hash"}, "event_id": str(uuid.uuid4()),
                               "aggregate_version": len(chain), "chain_seq": len(chain) + 1,
                               "prev_hash": chain[-1]["hash"], **checkpoint_fields(chain)}))
    members = {run, call, approval}
    family = {e["chain_seq"] for e in chain if e["aggregate_id"] in members
              or (e["type"] == "budget.cost_recorded" and e["payload"].get("run_id") == run)}
    [sweep] = [e for e in chain if e["type"] == "retention.swept"]
    assert (sweep["payload"]["run_ids"], sweep["payload"]["stores"]) == ([run], list(retention.STORES["audit"]))
    return chain, family, sweep["chain_seq"]


async def test_a_sweep_tombstones_its_runs_envelopes_and_the_archive_still_verifies(tmp_path, monkeypatch):
    chain, family, swept_by = family_story()
    assert (len(chain), sorted(family), swept_by, sizes_signed(chain)[-3:]) == \
        (385, [3, 4, 5, 6, 7, 8, 9, 317, 318, 319, 322, 323], 324, [279, 319, 359])
    swept, kept = tmp_path / "swept", tmp_path / "kept"
    await archive(swept, chain, 29)
    with monkeypatch.context() as unswept:   # the same chain, as if its sweep did not name the archive
        unswept.setattr("projectors.archive_tree.governs", lambda store, env: False)
        await archive(kept, chain, 29)
    files = public(swept)
    # every copy of a swept event's line (the full bundle, and the partial ones of checkpoints 279, 319 and
    # 359, the second written before the sweep) is its tombstone; every other line is the envelope
    assert sorted(p for p in files if p.startswith("events/")) == \
        ["events/000", "events/001.p/103", "events/001.p/23", "events/001.p/63"]
    for rel, data in files.items():
        if rel.startswith("events/"):
            place = parse_path(rel)
            assert data == b"".join(tombstone_line(env, swept_by) if env["chain_seq"] in family else jcs(env) + b"\n"
                                    for env in chain[place.n * 256:place.n * 256 + place.width]), rel
    # the entries and tiles stay exactly as they are without the sweep
    assert {p: d for p, d in files.items() if not p.startswith("events/")} == \
        {p: d for p, d in public(kept).items() if not p.startswith("events/")}
    [report] = verify_archive(swept, [SIGNER.verifier])
    assert (report.problems, report.warnings, report.size, report.checkpoint_size, report.tombstones,
            report.envelopes) == ([], [], 359, 359, 12, 359 - 12)
    projection = await ArchiveProjection(swept, "test").open()
    assert [e["chain_seq"] for e in projection.envelopes(T) if "swept_by" in e] == sorted(family)
    # other poll boundaries, and each poll delivered twice, give the same bytes
    again = tmp_path / "again"
    await archive(again, chain, 68, twice=True)
    assert everything(again) == everything(swept)


async def test_a_sweep_beyond_the_published_checkpoint_is_a_warning_until_one_covers_it(tmp_path, monkeypatch):
    chain, family, swept_by = family_story()
    await archive(tmp_path, chain[:330], 330)   # the sweep (324) is archived; no checkpoint after it (360) is
    [report] = verify_archive(tmp_path, [SIGNER.verifier])
    assert (report.problems, report.warnings, report.size, report.tombstones) == (
        [], ["10 tombstones name sweeps beyond the archive's 319 entries: a later archive shows them"], 319, 10)


def tombstone_line(env: dict, swept_by: int) -> bytes:
    return jcs({"chain_seq": env["chain_seq"], "hash": env["hash"], "swept_by": swept_by}) + b"\n"


async def test_an_altered_tombstone_is_named(tmp_path, monkeypatch):
    chain, _, swept_by = family_story()
    await archive(tmp_path, chain, len(chain))
    path = at(tmp_path, "events/000")
    lines = path.read_bytes().splitlines(keepends=True)
    assert (lines[2], lines[3]) == (tombstone_line(chain[2], swept_by), tombstone_line(chain[3], swept_by))
    other = ("1" if chain[3]["hash"][0] == "0" else "0") + chain[3]["hash"][1:]
    lines[2] = lines[2].replace(b'"swept_by":324', b'"swept_by":2')
    lines[3] = lines[3].replace(chain[3]["hash"].encode(), other.encode())
    lines[4] = tombstone_line(chain[4], 100)   # a tombstone naming an event that is no sweep
    lines[5] = lines[5][:-2] + b',"x":1}\n'
    path.write_bytes(b"".join(lines))
    assert problems(tmp_path) == [
        "events/000 line 3 (chain_seq 3): the tombstone's swept_by 2 is not a chain_seq after 3",
        f"events/000 line 4 (chain_seq 4): has hash {other}, but entry 3 of tile/entries/000 and hash 3 of "
        f"tile/0/000 say {chain[3]['hash']}",
        "events/000 line 6 (chain_seq 6): a tombstone has exactly chain_seq, hash, swept_by, not chain_seq, hash, "
        "swept_by, x",
        "events/000 line 5 (chain_seq 5): the tombstone names chain_seq 100, which is not a retention.swept event"]


# -- the procedure by hand (docs/archive.md) ------------------------------------------------------------

def by_hand(tmp_path: Path, tenant_dir: Path, vkey: str) -> tuple[int, str, str]:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "archive.md").read_text()
    script = re.search(r"## Checking an archive by hand.*?```python\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "check_archive.py").write_text(script)
    done = subprocess.run([sys.executable, "-I", "check_archive.py", str(tenant_dir), vkey], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr.strip().splitlines()[-1] if done.stderr else ""


async def test_the_procedure_by_hand_in_the_docs_checks_an_archive_and_names_what_is_wrong(tmp_path, monkeypatch):
    chain, family, _ = family_story()
    root = tmp_path / "archive"
    await archive(root, chain, 50)
    code, out, err = by_hand(tmp_path, root / T, SIGNER.vkey)
    root_b64 = base64.b64encode(merkle.root([bytes.fromhex(e["hash"]) for e in chain[:359]])).decode()
    assert (code, out, err) == (0, f"entries, tiles and {359 - 12} envelopes (12 pruned) OK against {SIGNER.name} size "
                                   f"359 root {root_b64}\nopenssl pkeyutl -verify -pubin -keyform DER -inkey key.der "
                                   "-rawin -in note.txt -sigfile note.sig\n", "")
    if shutil.which("openssl"):
        verified = subprocess.run(out.splitlines()[1].split(), cwd=tmp_path, capture_output=True, text=True)
        assert (verified.returncode, verified.stdout.strip()) == (0, "Signature Verified Successfully")
    flip(at(root, "tile/0/000"), 3 * 32)
    assert by_hand(tmp_path, root / T, SIGNER.vkey)[::2] == (
        1, "AssertionError: chain_seq 4 (entry 3 of tile/entries/000): not hash 3 of tile/0/000")
    flip(at(root, "tile/0/000"), 3 * 32)
    path = at(root, "events/001.p/103")
    path.write_bytes(path.read_bytes().replace(b'"agent_id":"kept-250"', b'"agent_id":"kept-251"'))
    [seq] = [e["chain_seq"] for e in chain if e["payload"].get("agent_id") == "kept-250"]
    assert by_hand(tmp_path, root / T, SIGNER.vkey)[::2] == (
        1, f"AssertionError: chain_seq {seq} (entry {seq - 257} of tile/entries/001): the envelope on line "
           f"{seq - 256} of events/001 does not hash to it")
