"""Stuck runs in the real runs read model: flagged, listed and counted as of the reader's now, in PostgreSQL.

A tenant's chain is decided by the domain itself (TenantLedger, as the processor would) and folded by
RunsProjection; ReadModels reads it back with its clock set by the test, so "stuck" is seen to be a
function of recorded deadlines and the query's now, and nothing else.
"""
from datetime import datetime, timedelta, timezone

import pytest

from infra.adapters.postgres import open_pool
from projectors.base import Batch
from projectors.runs import RunsProjection
from queries.readmodels import ReadModels
from queries.stuck import StuckRunMetrics, stuck_counts
from tests.support import make_settings, unique
from tests.unit.harness import ADMIN, Harness

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def world():
    """Runs of one tenant: due in 60 s, due in an hour (by the tenant default), none, and one ended late."""
    settings, h = make_settings(), Harness(unique("tenant-"))
    pool = await open_pool(settings, max_size=2)
    try:
        soon = h.running_run(deadline_s=60)
        h.ok({"type": "SetRunDeadline", "deadline_s": 3600}, ADMIN)
        later = h.ok({"type": "RequestRun", "agent_id": "b"})
        h.ok({"type": "SetRunDeadline", "deadline_s": None}, ADMIN)
        never = h.running_run()
        ended = h.running_run(deadline_s=1)
        h.ok({"type": "CompleteRun", "run_id": ended})
        # a run recorded before deadlines existed: its v1 payload has no deadline_at
        legacy = dict(h.log[0], payload={k: v for k, v in h.log[0]["payload"].items() if k != "deadline_at"},
                      schema_version=1, aggregate_id="01a20000-0000-7000-8000-0000000000aa")
        projection = await RunsProjection(pool, settings.topic_prefix).open()
        await projection.apply([Batch(0, [*h.log, legacy], len(h.log) + 1)])
        models = ReadModels(pool, settings.topic_prefix)
        yield {"tenant": h.ledger.tenant_id, "models": models, "runs": {
            "soon": soon, "later": later, "never": never, "ended": ended, "legacy": legacy["aggregate_id"]}}
    finally:
        await pool.close()


def at(models: ReadModels, seconds: float) -> ReadModels:
    models.clock = lambda: T0 + timedelta(seconds=seconds)
    return models


async def flags(w: dict, seconds: float) -> dict:
    listed = (await at(w["models"], seconds).list_runs(w["tenant"], None, None, None, None, None, 50))["items"]
    names = {v: k for k, v in w["runs"].items()}
    return {names[str(r["run_id"])]: (r["stuck"], r["overdue_s"]) for r in listed}


async def test_a_run_is_stuck_from_its_deadline_on_until_it_ends(world):
    w = world
    assert await flags(w, 60) == {n: (False, None) for n in w["runs"]}
    assert await flags(w, 90.5) == {"soon": (True, 30.5), "later": (False, None), "never": (False, None),
                                    "ended": (False, None), "legacy": (False, None)}
    assert await flags(w, 3605) == {"soon": (True, 3545.0), "later": (True, 5.0), "never": (False, None),
                                    "ended": (False, None), "legacy": (False, None)}
    run = await at(w["models"], 3605).get_run(w["tenant"], w["runs"]["later"])
    assert (run["deadline_at"], run["stuck"], run["overdue_s"], run["state"]) == (
        T0 + timedelta(seconds=3600), True, 5.0, "requested")


async def test_stuck_runs_are_listed_and_counted_as_of_the_asked_now(world):
    w, models = world, world["models"]
    stuck = await at(models, 3605).list_runs(w["tenant"], None, None, None, None, None, 50, stuck=True)
    assert sorted(str(r["run_id"]) for r in stuck["items"]) == sorted([w["runs"]["soon"], w["runs"]["later"]])
    rest = await models.list_runs(w["tenant"], None, None, None, None, None, 50, stuck=False)
    assert sorted(str(r["run_id"]) for r in rest["items"]) == sorted(
        w["runs"][n] for n in ("never", "ended", "legacy"))
    only_running = await models.list_runs(w["tenant"], "running", None, None, None, None, 50, stuck=True)
    assert [str(r["run_id"]) for r in only_running["items"]] == [w["runs"]["soon"]]
    first = await models.list_runs(w["tenant"], None, None, None, None, None, 1, stuck=True)
    second = await models.list_runs(w["tenant"], None, None, None, None, first["next_cursor"], 1, stuck=True)
    assert (len(first["items"]), len(second["items"]), second["next_cursor"]) == (1, 1, None)
    counts = await stuck_counts(models, T0 + timedelta(seconds=3605))
    assert counts[w["tenant"]] == 2
    assert w["tenant"] not in await stuck_counts(models, T0 + timedelta(seconds=30))


async def test_the_gauge_reads_each_tenants_count_and_zero_once_it_recovers(world):
    w, clock = world, {"now": T0 + timedelta(seconds=3605)}
    gauge = StuckRunMetrics(w["models"], lambda: clock["now"])
    await gauge.refresh()
    assert gauge.counts[w["tenant"]] == 2
    clock["now"] = T0
    await gauge.refresh()
    observed = {o.attributes["tenant_id"]: o.value for o in gauge.observe(None)}
    assert observed[w["tenant"]] == 0
