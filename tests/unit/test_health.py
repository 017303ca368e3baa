"""Health without the services: bounded, cached probes, loop pings, and the rules that judge each part."""
import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from infra.adapters.probes import OnThread, Probe, loop_answers
from infra.health.report import Health, Roles
from tests.support import wait_until

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now, self.mono = T0, 0.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


class Dependency:
    """A check whose answer the test sets: None (ok), an exception to raise, or "hang"."""

    def __init__(self):
        self.answer = None
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.answer == "hang":
            await asyncio.Event().wait()
        if isinstance(self.answer, Exception):
            raise self.answer


def probe(check, clock: Clock, timeout_s: float = 0.05, cache_s: float = 2.0) -> Probe:
    return Probe("dep", check, timeout_s, cache_s, clock.wall, clock.monotonic)


async def test_a_probe_is_cached_and_one_runs_however_many_ask():
    clock, dep = Clock(), Dependency()
    p = probe(dep, clock)
    answers = await asyncio.gather(*(p.observe() for _ in range(50)))
    assert (dep.calls, {a.status for a in answers}) == (1, {"ok"})
    clock.advance(1.9)
    await p.observe()
    assert dep.calls == 1
    clock.advance(0.2)
    await p.observe()
    assert dep.calls == 2


async def test_a_probe_that_does_not_answer_is_down_for_its_timeout_and_says_so():
    clock, dep = Clock(), Dependency()
    dep.answer = "hang"
    seen = await asyncio.wait_for(probe(dep, clock).observe(), 5)
    assert (seen.status, seen.timed_out, seen.reason) == ("down", True, "no answer within 0.05 s (the probe's timeout)")


async def test_since_is_when_a_probe_first_saw_its_status():
    clock, dep = Clock(), Dependency()
    p = probe(dep, clock, cache_s=0)
    assert (await p.observe()).since == T0
    clock.advance(10)
    dep.answer = ConnectionRefusedError("refused")
    first_down = await p.observe()
    clock.advance(10)
    again = await p.observe()
    assert (first_down.since, again.since, again.checked_at, again.reason) == (
        T0 + timedelta(seconds=10), T0 + timedelta(seconds=10), T0 + timedelta(seconds=20),
        "ConnectionRefusedError('refused')")
    dep.answer = None
    clock.advance(1)
    assert ((await p.observe()).status, (await p.observe()).since) == ("ok", T0 + timedelta(seconds=21))


async def test_a_blocking_check_that_hangs_costs_one_thread_not_one_per_probe():
    clock, release, runs = Clock(), threading.Event(), []

    def blocking() -> None:
        runs.append(1)
        release.wait(10)
    p = probe(OnThread(blocking, "test"), clock, cache_s=0)
    assert (await p.observe()).reason == "no answer within 0.05 s (the probe's timeout)"
    second = await p.observe()
    assert (second.status, second.timed_out, len(runs)) == ("down", True, 1)
    assert second.reason.startswith("the last probe has been running for ") and \
        second.reason.endswith("longer than the probe's timeout of 0.05 s")
    release.set()

    async def recovered():
        return (await p.observe()).status == "ok"
    await wait_until(recovered, 5, "the probe to run again once the thread returned")
    assert len(runs) == 2


async def test_a_loop_answers_unless_it_is_blocked_or_gone():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert await loop_answers(loop, 1.0) is True
    loop.call_soon_threadsafe(lambda: threading.Event().wait(0.5))  # a callback that blocks the loop
    assert await loop_answers(loop, 0.1) is False
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    assert await loop_answers(loop, 0.1) is False
    assert await loop_answers(asyncio.get_running_loop(), 0.1) is True


# -- judging the parts ---------------------------------------------------------------------

@dataclass
class FakeProcessor:
    assigned: set[int] | None = field(default_factory=lambda: {0, 1})
    owners: dict = field(default_factory=lambda: {0: None, 1: None})
    broken: dict = field(default_factory=dict)


@dataclass
class FakeAdmission:
    held: dict = field(default_factory=dict)


@dataclass
class FakeProjection:
    name: str


@dataclass
class FakeRunner:
    projection: FakeProjection
    admission: FakeAdmission = field(default_factory=FakeAdmission)
    failed: str | None = None
    failed_since: datetime | None = None
    last_error: str | None = None
    erring_since: datetime | None = None


class FakeHub:
    def __init__(self):
        self.ready = asyncio.Event()
        self.ready.set()
        self.listening_since, self.lost_since, self.lost_because = T0, None, None


def health_of(deps: dict[str, Dependency], clock: Clock, runners=None, processor=None, hub=None) -> Health:
    roles = Roles(api=True, hub=hub or FakeHub(), processor=processor or FakeProcessor(),
                  projectors={"runs": "postgres", "audit": "clickhouse", "archive": None},
                  runners=runners if runners is not None else
                  [FakeRunner(FakeProjection(n)) for n in ("runs", "audit", "archive")])
    probes = {name: probe(check, clock, cache_s=0) for name, check in deps.items()}
    return Health(roles, probes, {}, 0.05, clock=clock.wall)


def statuses(body: dict) -> dict:
    return {"status": body["status"], "dependencies": {n: d["status"] for n, d in body["dependencies"].items()},
            **{role: (r["status"], {n: p["status"] for n, p in r["parts"].items()}) for role, r in body["roles"].items()}}


@pytest.fixture
def deps() -> dict[str, Dependency]:
    return {"broker": Dependency(), "postgres": Dependency(), "clickhouse": Dependency()}


async def test_with_postgres_down_reads_of_clickhouse_and_commands_still_work(deps):
    clock = Clock()
    deps["postgres"].answer = ConnectionRefusedError("connection to 10.0.0.5 refused")
    code, body = await health_of(deps, clock).ready(detail=False)
    assert (code, statuses(body)) == (200, {
        "status": "degraded", "dependencies": {"broker": "ok", "clickhouse": "ok", "postgres": "down"},
        "api": ("degraded", {"commands": "ok", "postgres_reads": "down", "clickhouse_reads": "ok", "live_streams": "down"}),
        "processor": ("ok", {"deciding": "ok"}),
        "projectors": ("degraded", {"runs": "down", "audit": "ok", "archive": "ok"})})
    assert body["fails"] == ["reads of the PostgreSQL read models fail: PostgreSQL is down",
                             "live SSE tails are not delivered: PostgreSQL is down",
                             "the runs read model does not advance: PostgreSQL is down"]
    assert "commands are accepted" in body["works"]
    assert "10.0.0.5" not in str(body) and "reason" not in str(body)


async def test_ops_see_why_and_the_dependency_each_part_is_down_for(deps):
    clock = Clock()
    deps["postgres"].answer = "hang"
    _, body = await health_of(deps, clock).ready(detail=True)
    postgres = body["dependencies"]["postgres"]
    assert {k: postgres[k] for k in ("status", "cause", "reason", "timeout_s")} == {
        "status": "down", "cause": "timeout", "reason": "no answer within 0.05 s (the probe's timeout)",
        "timeout_s": 0.05}
    runs = body["roles"]["projectors"]["parts"]["runs"]
    assert (runs["cause"], runs["needs"], runs["reason"]) == (
        "dependency", "postgres", "PostgreSQL is down: no answer within 0.05 s (the probe's timeout)")


async def test_with_every_dependency_down_nothing_is_served_and_readiness_says_503(deps):
    clock = Clock()
    for dep in deps.values():
        dep.answer = OSError("down")
    code, body = await health_of(deps, clock).ready(detail=False)
    assert (code, body["status"], {r: v["status"] for r, v in body["roles"].items()}, body["works"]) == (
        503, "down", {"api": "down", "processor": "down", "projectors": "down"}, [])


async def test_a_role_is_judged_alone_when_asked(deps):
    clock = Clock()
    deps["broker"].answer = OSError("down")
    health = health_of(deps, clock)
    assert [(await health.ready(False, role))[0] for role in ("api", "processor", "projectors")] == [200, 503, 503]
    assert (await health.ready(False))[0] == 200  # the API still serves reads


async def test_a_projector_failed_retrying_or_holding_tenants_is_told_apart(deps):
    clock = Clock()
    runners = [FakeRunner(FakeProjection("runs"), failed="projector runs stopped: bad record", failed_since=T0),
               FakeRunner(FakeProjection("audit"), last_error="batch failed: boom", erring_since=T0),
               FakeRunner(FakeProjection("archive"), FakeAdmission({"t1": object(), "t2": object()}))]
    code, body = await health_of(deps, clock, runners).report(detail=False)
    parts = body["roles"]["projectors"]["parts"]
    assert (code, {n: (p["status"], p["since"], p["held_tenants"]) for n, p in parts.items()}) == (503, {
        "runs": ("failed", T0.isoformat(), 0), "audit": ("retrying", T0.isoformat(), 0),
        "archive": ("degraded", T0.isoformat(), 2)})
    assert (body["projector:runs"], body["projector:audit"], body["projector:archive"]) == ("failed", "retrying", "degraded")
    assert "the archive read model follows the log, in part (tenants held: 2)" in body["works"]


async def test_a_processor_acquiring_or_with_a_broken_chain_is_told_apart(deps):
    clock = Clock()
    joining = await health_of(deps, clock, processor=FakeProcessor(assigned=None, owners={})).ready(False, "processor")
    acquiring = await health_of(deps, clock, processor=FakeProcessor(owners={})).ready(False, "processor")
    broken = await health_of(deps, clock, processor=FakeProcessor(owners={1: None}, broken={0: "seq 4"})).ready(True)
    assert [(code, body["roles"]["processor"]["status"]) for code, body in (joining, acquiring)] == \
        [(503, "starting"), (503, "starting")]
    deciding = broken[1]["roles"]["processor"]["parts"]["deciding"]
    assert (broken[0], deciding["status"], deciding["owned"], deciding["broken"], deciding["broken_because"]) == \
        (200, "degraded", [1], [0], {"0": "seq 4"})


async def test_the_hub_down_since_it_lost_its_connection(deps):
    clock, hub = Clock(), FakeHub()
    hub.ready.clear()
    hub.lost_since, hub.lost_because = T0 - timedelta(seconds=30), "OperationalError('terminating connection')"
    _, body = await health_of(deps, clock, hub=hub).ready(detail=False)
    assert body["roles"]["api"]["parts"]["live_streams"] == {"status": "down",
                                                             "since": (T0 - timedelta(seconds=30)).isoformat()}
