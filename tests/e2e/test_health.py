"""Health over HTTP against `runledger serve`, while its PostgreSQL, then its broker, then a projector fail.

The service runs on a stack of this module's own (infra/local/stack.sh in a temporary home, on free
ports), never the shared one on 19092/15432, so stopping its PostgreSQL or pausing its broker hurts
nobody else. Each step asks /readyz (and /healthz, /livez) and checks the whole degraded structure:
what is down, since when, what still works. A dependency that hangs (its process stopped with
SIGSTOP: connections are accepted by the kernel and never answered) must be named down *for the
probe's timeout*, and the answer must arrive at all: each test runs under a pytest timeout, and
httpx's own timeout is longer than any probe's.
"""
import signal
from datetime import datetime

import httpx
import pytest

from infra.entry.client import LedgerClient
from tests.e2e.test_poison_tenant import poison
from tests.own_stack import running_stack
from tests.support import Service, make_settings, token, unique, wait_until

PROBE_TIMEOUT_S = 1.0
OPS = {"Authorization": f"Bearer {token('ops', 'oncall', ('admin',))}"}
PG_MODELS = ("runs", "approvals", "channels", "governance", "evidence")
PROJECTORS = (*PG_MODELS, "audit", "cost", "archive")
pytestmark = pytest.mark.timeout(120)


class HealthService(Service):
    """A serve with short probe bounds; without the API role, it serves health alone on its port."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "RUNLEDGER_HEALTH_TIMEOUT_S": str(PROBE_TIMEOUT_S), "RUNLEDGER_HEALTH_CACHE_S": "0.5",
                **({} if self.api else {"RUNLEDGER_HEALTH_PORT": str(self.port)})}


@pytest.fixture(scope="module")
def stack():
    with running_stack("rlhealth-") as own:
        yield own


@pytest.fixture(scope="module")
async def svc(stack):
    settings = make_settings(partitions=1, kafka_bootstrap=f"127.0.0.1:{stack.kafka_port}",
                             database_url=f"postgresql://runledger:runledger@127.0.0.1:{stack.pg_port}/runledger")
    service = HealthService(settings).start()
    try:
        await service.ready(90)
        yield service
    finally:
        service.stop()


@pytest.fixture
async def http(svc):
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        yield client


async def ready(http, detail: bool = False, role: str | None = None) -> tuple[int, dict]:
    response = await http.get("/readyz", params={"role": role} if role else {}, headers=OPS if detail else {})
    return response.status_code, response.json()


def statuses(body: dict) -> dict:
    return {"status": body["status"], "dependencies": {n: d["status"] for n, d in body["dependencies"].items()},
            **{role: (r["status"], {n: p["status"] for n, p in r["parts"].items()}) for role, r in body["roles"].items()}}


def expected(status: str = "ok", roles: tuple[str, str, str] = ("ok", "ok", "ok"), broker: str = "ok",
             postgres: str = "ok", api: dict | None = None, projectors: dict | None = None) -> dict:
    """What statuses() reads when every part is ok but those named; `roles`: api, processor, projectors."""
    api_parts = {"commands": "ok", "postgres_reads": "ok", "clickhouse_reads": "ok", "live_streams": "ok", **(api or {})}
    return {"status": status, "dependencies": {"broker": broker, "clickhouse": "ok", "postgres": postgres},
            "api": (roles[0], api_parts), "processor": (roles[1], {"deciding": roles[1]}),
            "projectors": (roles[2], {name: "ok" for name in PROJECTORS} | (projectors or {}))}


async def until(http, what: str, check, timeout_s: float = 30, **kw) -> dict:
    async def answered():
        try:
            code, body = await ready(http, **kw)
        except httpx.TransportError:  # not listening yet
            return None
        return body if check(code, body) else None
    return await wait_until(answered, timeout_s, what)


async def test_all_up_every_part_is_ok_and_every_loop_answers(http):
    body = await until(http, "every part ok", lambda code, b: code == 200 and b["status"] == "ok")
    assert statuses(body) == expected()
    assert body["fails"] == [] and "commands are accepted" in body["works"]
    live = await http.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "ok", "timeout_s": PROBE_TIMEOUT_S, "loops": {
        "api": "ok", "processor": "ok", "projectors": "ok"}})


async def test_a_postgres_that_hangs_is_down_for_the_probe_timeout_and_commands_still_work(http, stack):
    stack.signal_postgres(signal.SIGSTOP)  # new connections are accepted by the kernel, and never answered
    try:
        body = await until(http, "postgres down", lambda code, b: b["dependencies"]["postgres"]["status"] == "down",
                           detail=True)
        code, anonymous = await ready(http)
    finally:
        stack.signal_postgres(signal.SIGCONT)
    down = {"postgres_reads": "down", "live_streams": "down"}
    assert (code, statuses(anonymous)) == (200, expected("degraded", ("degraded", "ok", "degraded"), postgres="down", api=down,
                                                         projectors={m: "down" for m in PG_MODELS}))
    postgres = body["dependencies"]["postgres"]
    assert {k: postgres[k] for k in ("cause", "reason", "timeout_s")} == {
        "cause": "timeout", "reason": "no answer within 1 s (the probe's timeout)", "timeout_s": PROBE_TIMEOUT_S}
    runs = body["roles"]["projectors"]["parts"]["runs"]
    assert (runs["needs"], runs["cause"], runs["since"]) == ("postgres", "dependency", postgres["since"])
    assert anonymous["fails"] == ["reads of the PostgreSQL read models fail: PostgreSQL is down",
                                  "live SSE tails are not delivered: PostgreSQL is down",
                                  *(f"the {m} read model does not advance: PostgreSQL is down" for m in PG_MODELS)]
    assert {"commands are accepted", "audit, discovery and cost reads work"} <= set(anonymous["works"])
    assert "reason" not in str(anonymous) and "cause" not in str(anonymous)


async def test_a_stopped_postgres_is_down_since_it_stopped_and_the_process_lives_on(http, stack, svc):
    await until(http, "postgres back", lambda code, b: b["status"] == "ok")
    stopped_at = datetime.now().astimezone()
    stack.stop_postgres()
    try:
        body = await until(http, "postgres refused", lambda code, b: b["dependencies"]["postgres"].get("cause") == "error",
                           detail=True)
        assert "Connection refused" in body["dependencies"]["postgres"]["reason"]
        assert datetime.fromisoformat(body["dependencies"]["postgres"]["since"]) >= stopped_at
        # A command is still accepted (the processor needs the broker only); the runs projector then fails to
        # store it and retries, without ending the process
        tenant = unique("health-")
        run = await LedgerClient(http, token(tenant)).send({"type": "RequestRun", "agent_id": "bot"})
        assert run.accepted, run.body
        body = await until(http, "runs retrying", lambda code, b: b["roles"]["projectors"]["parts"]["runs"]["status"]
                           == "retrying", detail=True)
        assert body["roles"]["projectors"]["parts"]["runs"]["cause"] == "error"
        assert (await http.get("/livez")).status_code == 200 and svc.proc.poll() is None
        healthz = await http.get("/healthz")
        assert (healthz.status_code, healthz.json()["projector:runs"], healthz.json()["api"]) == (503, "retrying", "degraded")
    finally:
        stack.up()
    await until(http, "all ok again", lambda code, b: b["status"] == "ok", 60)

    async def shown():
        # Each connection the API's pool held across the restart fails one read (500) before the pool drops it
        response = await http.get(f"/v1/runs/{run.id}", params={"min_seq": run.body["events"][-1]["chain_seq"]},
                                  headers={"Authorization": f"Bearer {token(tenant)}"})
        return response.json() if response.status_code == 200 else None
    assert (await wait_until(shown, 30, "the run accepted while PostgreSQL was down"))["state"] == "requested"


async def test_a_broker_that_hangs_stops_commands_deciding_and_projecting_but_not_reads(http, stack):
    stack.signal_kafka(signal.SIGSTOP)
    try:
        body = await until(http, "broker down", lambda code, b: b["dependencies"]["broker"]["status"] == "down",
                           detail=True)
        code, anonymous = await ready(http)
        by_role = [(await ready(http, role=role))[0] for role in ("api", "processor", "projectors")]
    finally:
        stack.signal_kafka(signal.SIGCONT)
    assert (code, statuses(anonymous)) == (200, expected("degraded", ("degraded", "down", "down"), broker="down",
                                                         api={"commands": "down"},
                                                         projectors={m: "down" for m in PROJECTORS}))
    assert by_role == [200, 503, 503]
    assert {k: body["dependencies"]["broker"][k] for k in ("cause", "reason")} == {
        "cause": "timeout", "reason": "no answer within 1 s (the probe's timeout)"}
    assert anonymous["fails"][:2] == ["commands cannot be accepted: the broker is down",
                                      "this processor decides no commands: the broker is down"]
    assert anonymous["works"] == ["reads of the PostgreSQL read models work (runs, approvals, governance, "
                                  "evidence, stream replay)", "audit, discovery and cost reads work",
                                  "live SSE tails are delivered"]
    await until(http, "all ok again", lambda code, b: b["status"] == "ok", 90)


async def test_a_projector_holding_a_poisoned_tenant_is_degraded_and_says_so_to_ops_only(http, svc):
    tenant = unique("poisoned-")
    run = await LedgerClient(http, token(tenant)).send({"type": "RequestRun", "agent_id": "bot"})
    assert run.accepted, run.body
    bad = await poison(svc.settings, tenant, run.id)
    body = await until(http, "runs degraded", lambda code, b: b["roles"]["projectors"]["parts"]["runs"]["status"]
                       == "degraded", detail=True)
    code, anonymous = await ready(http)
    held = {"runs": "degraded", "channels": "degraded"}
    assert (code, statuses(anonymous)) == (200, expected("degraded", ("ok", "ok", "degraded"), projectors=held))
    assert [anonymous["roles"]["projectors"]["parts"][m]["held_tenants"] for m in PROJECTORS] == [1, 0, 1, 0, 0, 0, 0, 0]
    assert "the runs read model follows the log, in part (tenants held: 1)" in anonymous["works"]
    assert body["roles"]["projectors"]["parts"]["runs"]["reason"].startswith("tenants held at an event it cannot apply: 1")
    healthz = await http.get("/healthz", headers=OPS)
    assert (healthz.status_code, healthz.json()["projector:runs"]) == (200, "degraded")
    assert f"chain_seq {bad['chain_seq']}" in healthz.json()["projector:runs:held"][0]["reason"]
    assert "secret" not in (await http.get("/readyz")).text


async def test_a_process_without_the_api_serves_its_own_roles_health_on_the_health_port():
    worker = HealthService(make_settings(partitions=1), api=False).start()  # the shared stack: nothing is stopped
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
            body = await until(http, "the worker's roles ok", lambda code, b: code == 200 and b["status"] == "ok", 90)
            live = (await http.get("/livez")).json()
            healthz = await http.get("/healthz")
            missing = await http.get("/readyz", params={"role": "api"})
    finally:
        worker.stop()
    assert (sorted(body["roles"]), sorted(body["dependencies"])) == (
        ["processor", "projectors"], ["broker", "clickhouse", "postgres"])
    assert live["loops"] == {"processor": "ok", "projectors": "ok"}
    assert (healthz.status_code, "api" in healthz.json(), healthz.json()["processor"]) == (200, False, "ok")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


async def test_usr1_and_usr2_dump_every_threads_and_every_loops_stacks_and_the_process_goes_on(http, svc):
    """What a process that will not stop is doing (infra/entry/dumps.py): asked, it says, and carries on."""
    start = svc.log_path.stat().st_size
    svc.proc.send_signal(signal.SIGUSR1)
    svc.proc.send_signal(signal.SIGUSR2)

    def dumped() -> str | None:
        with open(svc.log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        return text if all(loop in text for loop in LOOP_DUMPS) and "Thread 0x" in text else None
    text = await wait_until(dumped, 30, "both dumps in the log")
    assert 'File "' in text and "serve" in text  # frames, not only headers
    assert ((await http.get("/livez")).status_code, svc.proc.poll()) == (200, None)


LOOP_DUMPS = ("asyncio tasks on the api loop", "asyncio tasks on the processor loop",
              "asyncio tasks on the projectors loop")
