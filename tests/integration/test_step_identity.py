"""The runs read model keeps each run's steps apart, even when two runs' steps share an id.

The domain refuses a step id already used in the tenant now, but logs written before that rule
may hold such pairs, and the read model must not let one run's events land on another's step.
"""
import uuid

from infra.adapters.postgres import open_pool
from projectors.base import Batch
from projectors.runs import RunsProjection
from queries.readmodels import ReadModels
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import GENESIS_HASH, seal
from tests.support import make_settings, unique
from tests.unit.test_envelope import unsealed


def sealed_log(tenant: str, events: list[tuple[str, str, int, dict]]) -> list[dict]:
    """Seal (type, run_id, aggregate_version, payload) as one tenant's chain, starting at chain_seq 1."""
    envelopes, prev = [], GENESIS_HASH
    for seq, (event_type, run_id, version, payload) in enumerate(events, start=1):
        env = seal({**unsealed(seq, prev), "tenant_id": tenant, "type": event_type,
                    "aggregate_id": run_id, "aggregate_version": version, "payload": payload,
                    "occurred_at": f"2026-11-22T10:00:{seq:02d}.000000Z"})
        envelopes.append(env)
        prev = env["hash"]
    return envelopes


def run_requested(run_id: str) -> tuple[str, str, int, dict]:
    return ("run.requested", run_id, 1,
            {"agent_id": "a", "project": "default", "budget_micros": None, "labels": {}})


def step_started(run_id: str, step_id: str, name: str) -> tuple[str, str, int, dict]:
    return ("run.step_started", run_id, 3, {"step_id": step_id, "kind": "llm", "name": name, "attempt": 1})


async def test_two_runs_with_the_same_step_id_keep_their_own_steps():
    # Given a log in which runs R1 and R2 of one tenant both started a step S, and R2 finished it
    settings = make_settings()
    tenant, first, second, step = unique("tenant-"), str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    log = sealed_log(tenant, [
        run_requested(first), ("run.started", first, 2, {}),
        run_requested(second), ("run.started", second, 2, {}),
        step_started(first, step, "plan-of-r1"), step_started(second, step, "plan-of-r2"),
        ("run.step_finished", second, 4, {"step_id": step, "outcome": "succeeded", "error": None}),
    ])
    assert verify_chain(tenant, log) == ChainVerdict(True, 7, log[-1]["hash"])
    pool = await open_pool(settings)
    try:
        # When the runs projection applies it
        projection = await RunsProjection(pool, settings.topic_prefix).open()
        await projection.apply([Batch(0, log, len(log))])
        # Then each run has its own step S with its own name, and only R2's is finished
        models = ReadModels(pool, settings.topic_prefix)
        r1, r2 = await models.get_run(tenant, first), await models.get_run(tenant, second)
        assert [(str(s["step_id"]), s["name"], s["outcome"], s["finished_at"]) for s in r1["steps"]] == [
            (step, "plan-of-r1", None, None)]
        assert [(str(s["step_id"]), s["name"], s["outcome"]) for s in r2["steps"]] == [
            (step, "plan-of-r2", "succeeded")]
        assert r2["steps"][0]["finished_at"] is not None
        assert (r1["step_count"], r2["step_count"], r2["version"]) == (1, 1, 4)
    finally:
        await pool.close()
