"""Outages are waited out: `runledger serve` against a broker and a PostgreSQL of this module's own.

In order, on one OwnStack (never the shared stack): serve is started while the broker is down, stays
up saying so, and accepts commands once it comes; the broker is then SIGKILLed under it: a command
answers 503 log_unavailable with Retry-After (not after the command timeout), and the same
Idempotency-Key sent again once the broker is back is recorded exactly once; last, a projector
process started while PostgreSQL is down waits, says so, and projects once it comes; and the read models'
set-up, its pool open when PostgreSQL goes, waits for it instead of failing. The time from
the broker's return to every tenant accepting is printed (measured, never asserted).
"""
import asyncio
import os
import time

import httpx
import pytest

from tests.e2e.test_health import HealthService
from tests.own_stack import OwnStack, running_stack
from tests.support import events, make_settings, token, unique, wait_until

OPS = {"Authorization": f"Bearer {token('ops', 'oncall', ('admin',))}"}
TENANTS = 8
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def stack():
    with running_stack("rloutage-") as own:
        yield own


@pytest.fixture(scope="module")
def settings(stack):
    return make_settings(partitions=4, kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url,
                         command_timeout_s=10.0)


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


async def kill_broker(stack: OwnStack) -> None:
    pid = stack.pid("kafka.pid")
    stack.kill_kafka()
    await wait_until(lambda: gone(pid), 30, "the broker process to be gone")


@pytest.fixture(scope="module")
async def svc(stack, settings):
    await kill_broker(stack)  # serve starts while the broker is down
    service = HealthService(settings).start()
    try:
        yield service
    finally:
        service.stop()


async def readiness(http: httpx.AsyncClient, **params) -> dict | None:
    try:
        response = await http.get("/readyz", params=params, headers=OPS)
    except httpx.TransportError:
        return None
    return response.json()


async def send(http: httpx.AsyncClient, tenant: str, key: str) -> httpx.Response:
    return await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "bot"},
                           headers={"Authorization": f"Bearer {token(tenant)}", "Idempotency-Key": key})


async def accepted(http: httpx.AsyncClient, tenant: str, key: str, timeout_s: float = 120) -> httpx.Response:
    """Send the command again with its key until it has a definite answer (as a client would)."""
    async def answered():
        try:
            response = await send(http, tenant, key)
        except httpx.TransportError:
            return None
        return response if response.status_code not in (503, 504) else None
    return await wait_until(answered, timeout_s, f"{tenant}'s command {key} answered")


async def all_tenants_accept(http, tenants: list[str], round_: str) -> list[httpx.Response]:
    return [await accepted(http, tenant, f"{round_}-{tenant}") for tenant in tenants]


def runs_requested(all_events: list[dict], tenant: str) -> list[tuple[int, str]]:
    return [(e["chain_seq"], e["type"]) for e in all_events if e["tenant_id"] == tenant]


async def test_serve_started_with_the_broker_down_stays_up_says_so_and_accepts_once_it_comes(stack, svc):
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        body = await wait_until(lambda: readiness(http), 60, "serve answering /readyz")
        body = await wait_until(lambda: readiness_with(http, broker="down"), 60, "the broker named down")
        live = await http.get("/livez")
        refused = await wait_until(lambda: built(http), 60, "the API built (no more 503 starting)")
        assert (live.status_code, refused.status_code, refused.headers["retry-after"], refused.json()["code"],
                refused.json()["details"]) == (200, 503, "2", "log_unavailable", {"sent": False})
        assert (body["roles"]["processor"]["parts"]["deciding"]["needs"], body["roles"]["api"]["parts"]["commands"]
                ["status"], svc.proc.poll()) == ("broker", "down", None)
        stack.up()
        returned = time.monotonic()
        tenants = [unique(f"t{i}-") for i in range(TENANTS)]
        answers = await all_tenants_accept(http, tenants, "first")
        print(f"\nbroker started under a waiting serve: all {TENANTS} tenants accepting "
              f"{time.monotonic() - returned:.1f} s after the broker was up")
    assert ([a.status_code for a in answers], svc.proc.poll()) == ([200] * TENANTS, None)


async def built(http) -> httpx.Response | None:
    response = await send(http, unique("early-"), "k-early")
    return None if response.json()["code"] == "starting" else response


async def readiness_with(http, broker: str) -> dict | None:
    body = await readiness(http)
    return body if body and body["dependencies"]["broker"]["status"] == broker else None


async def test_a_broker_killed_under_serve_answers_503_and_the_same_key_is_recorded_once_when_it_returns(
        stack, svc, settings):
    tenants = [unique(f"k{i}-") for i in range(TENANTS)]
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        assert [a.status_code for a in await all_tenants_accept(http, tenants, "before")] == [200] * TENANTS
        await kill_broker(stack)
        during = await send(http, tenants[0], f"during-{tenants[0]}")  # in the producer's buffer, unconfirmed
        again = await send(http, tenants[1], f"during-{tenants[1]}")  # the bus knows now: refused, not produced
        assert (during.status_code, during.headers["retry-after"], during.json()["code"]) == (503, "2", "log_unavailable")
        assert (again.status_code, again.json()["code"], again.json()["details"]) == (503, "log_unavailable",
                                                                                       {"sent": False})
        stack.up()
        returned = time.monotonic()
        answers = await all_tenants_accept(http, tenants, "during")
        print(f"\nbroker SIGKILLed and restarted under serve: all {TENANTS} tenants accepting "
              f"{time.monotonic() - returned:.1f} s after the broker was up")
        retried = await accepted(http, tenants[0], f"during-{tenants[0]}")  # the same key again: its one outcome
    assert [a.status_code for a in answers] == [200] * TENANTS
    assert (retried.status_code, retried.headers.get("idempotent-replayed"), retried.json()["events"]) == (
        200, "true", answers[0].json()["events"])
    logged = await events(settings)
    assert [runs_requested(logged, t) for t in tenants] == [[(1, "run.requested"), (2, "run.requested")]] * TENANTS
    assert svc.proc.poll() is None


async def test_a_projector_process_started_with_postgres_down_waits_says_so_and_projects_when_it_comes(
        stack, svc, settings):
    stack.stop_postgres()
    projector = HealthService(settings, api=False, processor=False).start()
    try:
        async with httpx.AsyncClient(base_url=projector.url, timeout=30) as http:
            body = await wait_until(lambda: readiness_with_postgres(http, "down"), 90, "PostgreSQL named down")
            live = await http.get("/livez")
            parts = body["roles"]["projectors"]["parts"]
            assert (live.status_code, parts["runs"]["status"], parts["runs"]["needs"], projector.proc.poll()) == (
                200, "down", "postgres", None)
            stack.up()
            body = await wait_until(lambda: ready_projectors(http), 120, "the projectors ok")
        assert (sorted(body["roles"]), projector.proc.poll()) == (["projectors"], None)
    finally:
        projector.stop()
    assert svc.proc.poll() is None


async def readiness_with_postgres(http, status: str) -> dict | None:
    body = await readiness(http)
    return body if body and body["dependencies"]["postgres"]["status"] == status else None


async def ready_projectors(http) -> dict | None:
    body = await readiness(http)
    return body if body and body["status"] == "ok" else None


async def test_postgres_gone_between_the_pool_opening_and_the_tables_set_up_is_waited_for(stack, settings, tmp_path):
    """The race that used to exit serve: the pool opened, then PostgreSQL went away before the read models'
    tables were created. The set-up waits (with_postgres) and completes once PostgreSQL is back."""
    from infra.adapters.backoff import waiting_on
    from infra.adapters.clickhouse import open_clickhouse
    from infra.adapters.postgres import open_pool
    from infra.entry.bootstrap import POSTGRES_PROJECTIONS, set_up_projections

    stack.up()
    fresh = settings.model_copy(update={"topic_prefix": unique("pgdrop"), "archive_dir": str(tmp_path / "archive")})
    pool = await open_pool(fresh, max_size=2)
    ch = open_clickhouse(None, str(tmp_path / "chdb"))
    try:
        stack.stop_postgres()
        setting_up = asyncio.create_task(set_up_projections(fresh, pool, ch))
        await wait_until(lambda: waiting_on(asyncio.get_running_loop()) or setting_up.done(), 60,
                         "the set-up to wait for PostgreSQL")
        assert not setting_up.done(), setting_up.exception()
        await asyncio.to_thread(stack.up)
        projections = await asyncio.wait_for(setting_up, 120)
        async with pool.connection() as conn:
            rows = await (await conn.execute("SELECT name FROM public.runledger_projections WHERE name LIKE %s",
                                             (f"{fresh.topic_prefix}:%",))).fetchall()
    finally:
        ch.close()
        await pool.close()
    pg = sorted(cls.name for cls in POSTGRES_PROJECTIONS)
    assert sorted(name.split(":", 1)[1] for (name,) in rows) == pg
    assert sorted(p.name for p in projections if p.name in pg) == pg
