"""An export is a job on the chain: requested (who, what scope, which checkpoint), then completed with the
bundle's digest in the command that records the Export, or failed with a reason."""
import uuid

import pytest

from tests.unit.harness import Harness

AUDITOR = {"subject": "auditor-1", "roles": ["auditor"]}
DIGEST = "ab" * 32


@pytest.fixture
def h() -> Harness:
    return Harness()


def scope(run: str) -> dict:
    return {"kind": "run", "id": run}


def record(job: str | None, run: str, size: int = 7, digest: str = DIGEST) -> dict:
    return {"type": "RecordExport", "job_id": job, "scope": scope(run), "events": 3, "checkpoint_size": size,
            "bundle_sha256": digest}


def test_a_job_is_requested_then_completed_in_the_same_command_that_records_the_export(h):
    run = h.running_run()
    job = h.ok({"type": "RequestExport", "scope": scope(run), "checkpoint_size": 7}, AUDITOR)
    requested = h.log[-1]
    assert (requested["type"], requested["aggregate_id"], requested["actor"]["subject"], requested["payload"]) == (
        "export_job.requested", job, "auditor-1",
        {"scope": {"kind": "run", "id": run, "subject": None, "start": None, "end": None, "query": None},
         "checkpoint_size": 7,
         "requested_by": "auditor-1"})
    before = len(h.log)
    reply = h.send(record(job, run), AUDITOR)
    completed, recorded = h.log[before:]
    export_id = recorded["aggregate_id"]
    assert [e["type"] for e in reply["events"]] == ["export_job.completed", "export.recorded"]
    assert (completed["aggregate_id"], completed["payload"]) == (job, {"export_id": export_id, "bundle_sha256": DIGEST})
    assert completed["command_id"] == recorded["command_id"]
    assert recorded["payload"]["bundle_sha256"] == DIGEST


def test_a_job_ends_once_and_only_as_it_was_requested(h):
    run = h.running_run()
    job = h.ok({"type": "RequestExport", "scope": scope(run), "checkpoint_size": 7}, AUDITOR)
    assert h.rejected(record(job, run, size=8), AUDITOR) == "export_job_mismatch"
    assert h.rejected(record(job, str(uuid.uuid4())), AUDITOR) == "export_job_mismatch"
    h.ok(record(job, run), AUDITOR)
    assert h.rejected(record(job, run), AUDITOR) == "export_job_closed"
    assert h.rejected({"type": "FailExport", "job_id": job, "code": "late", "reason": "late"}, AUDITOR) == "export_job_closed"


def test_a_failed_job_records_why_and_cannot_complete_afterwards(h):
    run = h.running_run()
    job = h.ok({"type": "RequestExport", "scope": scope(run), "checkpoint_size": 7}, AUDITOR)
    h.ok({"type": "FailExport", "job_id": job, "code": "write_failed", "reason": "the disk filled up"}, AUDITOR)
    # the code is kept in clear; the reason is free text, withheld unless the tenant stores content
    assert (h.log[-1]["type"], h.log[-1]["payload"]) == (
        "export_job.failed", {"code": "write_failed", "reason": {"withheld": "metadata-only"}})
    assert h.rejected(record(job, run), AUDITOR) == "export_job_closed"


def test_only_auditors_and_admins_run_export_jobs_and_an_unknown_job_is_not_found(h):
    run = h.running_run()
    assert h.rejected({"type": "RequestExport", "scope": scope(run), "checkpoint_size": 7}) == "missing_role"
    assert h.rejected(record(str(uuid.uuid4()), run), AUDITOR) == "not_found"
    assert h.rejected({"type": "FailExport", "job_id": str(uuid.uuid4()), "code": "x", "reason": "x"}, AUDITOR) == "not_found"
    # A RecordExport without a job still records the export alone, as bundles recorded before jobs existed did
    h.ok(record(None, run), AUDITOR)
    assert h.log[-1]["type"] == "export.recorded"
