"""`runledger verify-bundle` and `runledger export` without a broker: exit statuses and messages, and the
export job's shell (atomic write, starting over after a crash, the job requested then completed or failed, a
bundle kept when the API is unreachable) fed from a chain in memory instead of Kafka."""
import hashlib
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.entry import cli, export as job
from infra.entry.client import Outcome
from schemas.bundle import BundleUnreadable, verify_bundle
from schemas.bundle_scope import ScopeError, parse_scope
from schemas.bundle_write import ExportRefused
from tests.support import free_port, make_settings
from tests.unit.test_bundle import KEY, KEY_NAME, MANIFEST, SIGNER, export, flip, members, rewrite, story

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


def test_verify_bundle_exits_0_when_it_verifies_1_naming_each_problem_and_2_when_unreadable(tmp_path):
    h, ids = story()
    first = next(i for i, e in enumerate(h.log) if e["type"] == "checkpoint.signed") + 1
    old = export(h.log[:first], tmp_path, {"kind": "run", "id": ids["run"]}, "old.tar")
    path = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]})
    (tmp_path / "log.vkey").write_text(SIGNER.vkey + "\n")
    ok = invoke("verify-bundle", path, "--key", tmp_path / "log.vkey")
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, (
        f"OK bundle {path}: run {ids['run']} of tenant acme, 13 events; every hash, link and inclusion proof checks "
        f"against checkpoint size 22 signed by {KEY_NAME}; 1 earlier checkpoints consistent with it\n"), "")
    extends = invoke("verify-bundle", path, old, "--key", SIGNER.vkey)
    assert (extends.exit_code, extends.stdout.rstrip().endswith(f"; it extends {old}")) == (0, True)
    unkeyed = invoke("verify-bundle", path)
    assert (unkeyed.exit_code, unkeyed.stderr) == (0, (
        f"warning: the key {KEY_NAME} came from the bundle itself, so this only shows the bundle is "
        f"self-consistent; pass --key with the log's published vkey\n"))
    flip(path, "events.jsonl", b'"agent_id":"')
    failed = invoke("verify-bundle", path, "--key", SIGNER.vkey)
    assert (failed.exit_code, failed.stdout.splitlines()[:3]) == (1, [
        f"FAILED bundle {path}: 3 problems", "  manifest: events.jsonl digest mismatch",
        "  chain_seq 4: hash does not recompute"])
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    junk = invoke("verify-bundle", tmp_path / "junk")
    assert (junk.exit_code, junk.stderr.startswith(f"error: {tmp_path / 'junk'}: not a readable bundle")) == (2, True)
    bad_key = invoke("verify-bundle", old, "--key", "nope")
    assert (bad_key.exit_code, bad_key.stderr.startswith("error: --key 'nope' is neither a vkey (")) == (2, True)


def test_a_bundle_without_its_parts_is_unreadable_not_failed(tmp_path):
    h, ids = story()
    path = export(h.log, tmp_path, {"kind": "run", "id": ids["run"]})
    with tarfile.open(path) as tar, tarfile.open(tmp_path / "short.tar", "w") as short:
        for info in tar.getmembers():
            if info.name != "record.md":
                short.addfile(info, tar.extractfile(info))
    with pytest.raises(BundleUnreadable, match=f"^{tmp_path / 'short.tar'}: not a bundle: no record.md$"):
        verify_bundle(tmp_path / "short.tar")
    rewrite(path, MANIFEST, lambda data: data[:-20], fix_manifest=False)
    with pytest.raises(BundleUnreadable, match="manifest.json unreadable: "):
        verify_bundle(path)


def test_nothing_to_export_is_refused_naming_the_problem(tmp_path):
    h, ids = story()
    missing = "0193f2a4-5c1d-7f02-8e4b-6a9d1c7e5f33"
    with pytest.raises(ExportRefused, match=f"^no events of run {missing} in tenant acme$"):
        export(h.log, tmp_path, {"kind": "run", "id": missing})
    late = h.running_run()
    with pytest.raises(ExportRefused, match=f"^no events of run {late} in tenant acme up to its latest checkpoint "
                                            r"\(size \d+\); 2 come after it and are not yet covered$"):
        export(h.log, tmp_path, {"kind": "run", "id": late})
    with pytest.raises(ExportRefused, match="^no checkpoint yet in tenant acme: none of its 2 events"):
        export(h.log[:2], tmp_path, {"kind": "tenant"})
    with pytest.raises(ExportRefused, match="--since-size 999 is not a tree size from 1 to"):
        export(h.log, tmp_path, {"kind": "tenant"}, since_size=999)


@pytest.mark.parametrize("scope, message", [
    ("thread:1", "error: --scope 'thread:1': unknown scope kind 'thread': use run:<uuid>, approval:<uuid>, "
                 "actor:<subject>, time:<start>/<end>, query:<filter>=<value>&... (a discovery query's results) "
                 "or tenant"),
    ("query:colour=red", "error: --scope 'query:colour=red': query scope: unknown filter 'colour': use actor, type, "
                         "run_id, tool, decision, aggregate_id, tool_call_id, approval_id, since, until"),
    ("query:tool=a&tool=b", "error: --scope 'query:tool=a&tool=b': query scope: 'tool' is given more than once"),
    ("query:run_id=7", "error: --scope 'query:run_id=7': query scope: run_id '7' is not a UUID"),
    ("query:since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "error: --scope 'query:since=2026-02-01T00:00:"
     "00Z&until=2026-01-01T00:00:00Z': query scope: the range is reversed or empty: until 2026-01-01T00:00:00.000000Z "
     "is not after since 2026-02-01T00:00:00.000000Z"),
    ("time:2026-02-01T00:00:00Z/2026-01-01T00:00:00Z", "error: --scope 'time:2026-02-01T00:00:00Z/2026-01-01T00:00:00Z"
     "': time scope: the range is reversed or empty: end 2026-01-01T00:00:00.000000Z is not after start "
     "2026-02-01T00:00:00.000000Z"),
    ("time:2026-01-01T00:00:00/2026-02-01T00:00:00Z", "error: --scope 'time:2026-01-01T00:00:00/2026-02-01T00:00:00Z"
     "': '2026-01-01T00:00:00' has no UTC offset (write e.g. 2026-01-01T00:00:00Z)"),
    ("run:42", "error: --scope 'run:42': run scope: '42' is not a UUID"),
])
def test_export_refuses_a_bad_scope_with_exit_2_naming_it(tmp_path, scope, message):
    result = invoke("export", "--tenant", "acme", "--scope", scope, "--out", tmp_path / "b.tar")
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert list(tmp_path.iterdir()) == []


def test_scopes_parse_to_what_record_export_takes():
    assert parse_scope("tenant") == {"kind": "tenant"}
    assert parse_scope("run:0193F2A4-5C1D-7F02-8E4B-6A9D1C7E5F33") == {
        "kind": "run", "id": "0193f2a4-5c1d-7f02-8e4b-6a9d1c7e5f33"}
    assert parse_scope("actor:alice@example.com") == {"kind": "actor", "subject": "alice@example.com"}
    assert parse_scope("time:2026-01-01T01:00:00+01:00/2026-01-02T00:00:00Z") == {
        "kind": "time_range", "start": "2026-01-01T00:00:00.000000Z", "end": "2026-01-02T00:00:00.000000Z"}
    with pytest.raises(ScopeError, match="^actor scope: '' is not a subject"):
        parse_scope("actor:")


def feeding(chain: list[dict], fail_after: int | None = None, read: list[int] | None = None):
    """A stand-in for tenant_records that yields the chain as (offset, envelope) from a start offset, one offset
    per event (and can die half-way, as a broker might); `read` collects the offsets it yielded."""
    async def records(settings, tenant: str, progress: bool = False, start: int = 0):
        for offset in range(start, len(chain)):
            if offset == fail_after:
                raise ConnectionError("the broker went away")
            if read is not None:
                read.append(offset)
            yield offset, chain[offset]
    return records


async def test_the_job_writes_atomically_starts_over_when_it_cannot_resume_and_keeps_an_unrecorded_bundle(
        tmp_path, monkeypatch):
    h, ids = story()
    scope, out, said, settings = {"kind": "run", "id": ids["run"]}, tmp_path / "b.tar", [], make_settings()
    monkeypatch.setattr(job, "SAVE_EVERY_S", 3600)  # no save before the crash: nothing to resume from
    monkeypatch.setattr(job, "tenant_records", feeding(h.log, fail_after=10))
    with pytest.raises(ConnectionError):
        await job.write(settings, "acme", scope, out, None, False, said.append)
    assert ([p.name for p in tmp_path.iterdir()], said) == (["b.tar.partial.d"], [])   # no FILE, no FILE.partial
    Path(f"{out}.partial").write_bytes(b"what a killed export left")
    monkeypatch.setattr(job, "tenant_records", feeding(h.log))
    written = await job.write(settings, "acme", scope, out, None, False, said.append)
    assert said == [f"found an unfinished export at {out}.partial that cannot be resumed as asked (another scope, or "
                    f"it stopped before its first save); discarding it and starting over"]
    assert ([p.name for p in tmp_path.iterdir()], written.sha256) == (["b.tar"], hashlib.sha256(out.read_bytes()).hexdigest())
    assert verify_bundle(out, KEY).problems == []
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(job.NotRequested) as refused:
        await job.export(settings, "acme", scope, tmp_path / "c.tar", None, url, False, said.append)
    assert str(refused.value).startswith("nothing exported: the export could not be opened as a job on the chain, so "
                                         f"it would not be audited: the API at {url} is unreachable (")
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]      # no c.tar, no c.tar.partial*


class FakeApi:
    """Stands in for the command API: records what the job sends, accepts it, or fails the Nth send."""

    def __init__(self, monkeypatch, refuse: str | None = None):
        self.sent: list[tuple[dict, str]] = []
        self.refuse = refuse
        monkeypatch.setattr(job.Recorder, "send", self.send)

    async def send(self, body: dict, key: str):
        self.sent.append((body, key))
        if body["type"] == self.refuse:
            raise job.httpx.ConnectError("connection refused")
        return Outcome(200, {"status": "accepted", "events": [{"chain_seq": 40 + len(self.sent)}]}, False)


async def test_the_job_is_requested_after_the_chain_is_read_then_completed_with_the_bundles_digest(tmp_path, monkeypatch):
    h, ids = story()
    scope, out = {"kind": "run", "id": ids["run"]}, tmp_path / "b.tar"
    monkeypatch.setattr(job, "tenant_records", feeding(h.log))
    api = FakeApi(monkeypatch)
    done = await job.export(make_settings(), "acme", scope, out, None, "http://api", False, [].append)
    (request, request_key), (record, record_key) = api.sent
    assert (request, request_key) == ({"type": "RequestExport", "job_id": done.job_id, "scope": scope,
                                       "checkpoint_size": 22}, f"export-job-{done.job_id}")
    assert (record, record_key) == ({"type": "RecordExport", "job_id": done.job_id, "scope": scope, "events": 12,
                                     "checkpoint_size": 22, "bundle_sha256": done.written.sha256},
                                    f"export-{done.written.sha256}")
    assert done.summary().splitlines()[0].endswith(f"recorded as export.recorded at chain_seq 42 (job {done.job_id})")


async def test_a_refused_scope_requests_nothing_and_a_write_that_fails_ends_its_job_saying_why(tmp_path, monkeypatch):
    h, ids = story()
    monkeypatch.setattr(job, "tenant_records", feeding(h.log))
    api = FakeApi(monkeypatch)
    with pytest.raises(ExportRefused):
        await job.export(make_settings(), "acme", {"kind": "actor", "subject": "nobody"}, tmp_path / "a.tar", None,
                         "http://api", False, [].append)
    assert (api.sent, list(tmp_path.iterdir())) == ([], [])

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(job.BundleWriter, "finish", full_disk)
    with pytest.raises(OSError):
        await job.export(make_settings(), "acme", {"kind": "run", "id": ids["run"]}, tmp_path / "b.tar", None,
                         "http://api", False, [].append)
    (request, _), (failed, key) = api.sent
    assert (request["type"], failed, key) == ("RequestExport", {
        "type": "FailExport", "job_id": request["job_id"], "code": "write_failed",
        "reason": "OSError: [Errno 28] No space left on device"}, f"export-fail-{request['job_id']}")
    assert list(tmp_path.iterdir()) == []


async def test_a_bundle_written_but_not_recorded_is_kept_and_says_so(tmp_path, monkeypatch):
    h, ids = story()
    out = tmp_path / "b.tar"
    monkeypatch.setattr(job, "tenant_records", feeding(h.log))
    FakeApi(monkeypatch, refuse="RecordExport")
    with pytest.raises(job.NotRecorded) as caught:
        await job.export(make_settings(), "acme", {"kind": "run", "id": ids["run"]}, out, None, "http://api", False,
                         [].append)
    assert str(caught.value).startswith(f"the bundle is written to {out} (sha256 {caught.value.exported.written.sha256}),"
                                        f" but the export is not yet recorded: the API at http://api is unreachable (")
    assert (out.is_file(), caught.value.exported.chain_seq) == (True, None)
    assert verify_bundle(out, KEY).problems == []
    assert caught.value.exported.summary().splitlines() == [
        f"exported run {ids['run']} of tenant acme: 12 events (+1 governance) up to checkpoint size 22 (chain_seq 23) "
        f"to {out} ({out.stat().st_size} bytes), sha256 {caught.value.exported.written.sha256}",
        "2 events after the checkpoint are not yet covered by a signed checkpoint and are not in the bundle"]


def timeless(bundle: Path) -> dict[str, bytes]:
    """A bundle's members but the manifest, with record.md's export time taken out: what two exports share."""
    kept = {name: data for name, data in members(bundle).items() if name != MANIFEST}
    kept["record.md"] = b"\n".join(line for line in kept["record.md"].split(b"\n") if not line.startswith(b"- Exported at"))
    return kept


@pytest.mark.parametrize("crash_at", [1, 7, 12, -1])
async def test_an_export_stopped_while_reading_resumes_where_it_saved_and_writes_the_same_bundle(
        tmp_path, monkeypatch, crash_at):
    h, ids = story()
    crash_at %= len(h.log)  # -1: at the last record
    scope, said, settings = {"kind": "run", "id": ids["run"]}, [], make_settings()
    monkeypatch.setattr(job, "SAVE_EVERY_S", 0)  # save after every record read
    monkeypatch.setattr(job, "tenant_records", feeding(h.log))
    fresh = await job.write(settings, "acme", scope, tmp_path / "fresh.tar", None, False, said.append)

    out, read = tmp_path / "b.tar", []
    monkeypatch.setattr(job, "tenant_records", feeding(h.log, fail_after=crash_at, read=read))
    with pytest.raises(ConnectionError):
        await job.write(settings, "acme", scope, out, None, False, said.append)
    assert sorted(p.name for p in (tmp_path / "b.tar.partial.d").iterdir()) == [
        "hashes.bin", "scope.jsonl", "seqs.bin", "state.json"]
    # a kill between saves leaves bytes past the last save: the resume cuts them off
    with open(tmp_path / "b.tar.partial.d" / "scope.jsonl", "ab") as spool:
        spool.write(b'{"half a line')
    read.clear()
    monkeypatch.setattr(job, "tenant_records", feeding(h.log, read=read))
    resumed = await job.write(settings, "acme", scope, out, None, False, said.append)
    assert said == [f"resuming the unfinished export in {out}.partial.d (an earlier run stopped while reading the "
                    f"chain) from chain_seq {crash_at + 1}, log offset {crash_at}"]
    assert read == list(range(crash_at, len(h.log)))              # nothing read twice
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("b.tar")] == ["b.tar"]
    assert timeless(out) == timeless(tmp_path / "fresh.tar")
    assert (resumed.manifest["counts"], resumed.manifest["checkpoint"]) == (
        fresh.manifest["counts"], fresh.manifest["checkpoint"])
    assert verify_bundle(out, KEY).problems == []


async def test_a_saved_state_of_another_scope_is_not_resumed(tmp_path, monkeypatch):
    h, ids = story()
    out, said, settings = tmp_path / "b.tar", [], make_settings()
    monkeypatch.setattr(job, "SAVE_EVERY_S", 0)
    monkeypatch.setattr(job, "tenant_records", feeding(h.log, fail_after=5))
    with pytest.raises(ConnectionError):
        await job.write(settings, "acme", {"kind": "run", "id": ids["run"]}, out, None, False, said.append)
    monkeypatch.setattr(job, "tenant_records", feeding(h.log))
    written = await job.write(settings, "acme", {"kind": "run", "id": ids["other"]}, out, None, False, said.append)
    assert said == [f"found an unfinished export at {out}.partial that cannot be resumed as asked (another scope, or "
                    f"it stopped before its first save); discarding it and starting over"]
    assert (written.manifest["scope"], verify_bundle(out, KEY).problems) == ({"kind": "run", "id": ids["other"]}, [])
