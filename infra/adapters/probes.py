"""Bounded, cached probes of what the roles depend on: the broker, PostgreSQL, ClickHouse, event loops.

Health must never hang, and must not become the load that takes a dependency down. So each probe
is bounded by `timeout_s` (one that has not answered by then counts as down, and its reason says it
was the probe's timeout), its answer is reused for `cache_s`, and however many requests ask at
once, one probe is in flight. A probe is shielded from the request that started it: a client that
hangs up does not cancel it for the others. A blocking check (chdb and clickhouse-connect are
synchronous) runs on a thread of its own, and is not started again while the last one has not
returned: an engine that hangs costs one thread, not one per scrape.

`since` is when a probe first saw the status it reports: probes run when health is asked, so it is
as precise as the scrape interval.
"""
import asyncio
import concurrent.futures
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable

import psycopg
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

Check = Callable[[], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Unready(Exception):
    """The dependency answered, but cannot serve (a topic missing, a partition without a leader)."""


class StillRunning(TimeoutError):
    """The previous run of a blocking check has not returned yet."""


@dataclass(frozen=True)
class Observation:
    """One probe's answer: `reason` (why it is down) may quote a server's error, so only ops see it."""
    status: str  # "ok" or "down"
    since: datetime
    checked_at: datetime
    timeout_s: float
    reason: str | None = None
    timed_out: bool = False


class Probe:
    """One dependency's check, bounded by timeout_s, its answer reused for cache_s, one run in flight."""

    def __init__(self, name: str, check: Check, timeout_s: float, cache_s: float,
                 clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic):
        self.name, self.check, self.timeout_s, self.cache_s = name, check, timeout_s, cache_s
        self.clock, self.monotonic = clock, monotonic
        self.last: Observation | None = None
        self.checked = 0.0
        self.running: asyncio.Future | None = None

    async def observe(self) -> Observation:
        """The cached answer while it is fresh; else the running probe's, starting one if none runs."""
        if self.last is not None and self.monotonic() - self.checked < self.cache_s:
            return self.last
        if self.running is None:
            self.running = asyncio.ensure_future(self.probe())
        return await asyncio.shield(self.running)

    async def probe(self) -> Observation:
        try:
            await asyncio.wait_for(self.check(), self.timeout_s)
        except StillRunning as error:
            return self.record("down", f"{error}, longer than the probe's timeout of {self.timeout_s:g} s", True)
        except TimeoutError:
            return self.record("down", f"no answer within {self.timeout_s:g} s (the probe's timeout)", True)
        except Exception as error:
            return self.record("down", str(error) if isinstance(error, Unready) else repr(error))
        else:
            return self.record("ok")
        finally:
            self.running = None

    def record(self, status: str, reason: str | None = None, timed_out: bool = False) -> Observation:
        now = self.clock()
        since = self.last.since if self.last is not None and self.last.status == status else now
        self.last = Observation(status, since, now, self.timeout_s, reason, timed_out)
        self.checked = self.monotonic()
        return self.last


class OnThread:
    """A check running `blocking` on one thread of its own; while a run is still going, the next fails at once."""

    def __init__(self, blocking: Callable[[], object], name: str):
        self.blocking = blocking
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"probe-{name}")
        self.running: concurrent.futures.Future | None = None
        self.started = 0.0

    async def __call__(self) -> None:
        if self.running is not None and not self.running.done():
            raise StillRunning(f"the last probe has been running for {time.monotonic() - self.started:.1f} s")
        self.running, self.started = self.executor.submit(self.blocking), time.monotonic()
        await asyncio.wrap_future(self.running)


def postgres_check(database_url: str, timeout_s: float) -> Check:
    """Connect afresh (not through the pool, which may be starved for other reasons) and run SELECT 1."""
    async def check() -> None:
        # libpq's connect_timeout is whole seconds, at least 2; the probe's own timeout is the real bound.
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                                         connect_timeout=max(2, int(timeout_s) + 1)) as conn:
            await conn.execute("SELECT 1")
    return check


def broker_check(bootstrap: str, topics: list[str], timeout_s: float) -> Check:
    """A metadata request: the broker answers, every ledger topic exists, and each of its partitions has a leader."""
    async def check() -> None:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=max(1, int(timeout_s * 1000)),
                                client_id="runledger-health")
        try:
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
        finally:
            await client.close()
        problems = [topic_problem(metadata, topic) for topic in topics]
        if any(problems):
            raise Unready("; ".join(p for p in problems if p))
    return check


def topic_problem(metadata, topic: str) -> str | None:
    partitions = metadata.partitions_for_topic(topic)
    if not partitions:
        return f"topic {topic} does not exist"
    leaderless = sorted(p for p in partitions if metadata.leader_for_partition(TopicPartition(topic, p)) in (None, -1))
    return f"partitions {leaderless} of {topic} have no leader" if leaderless else None


def clickhouse_check(ch) -> Check:
    return OnThread(lambda: ch.query("SELECT 1"), "clickhouse")


async def loop_answers(loop: asyncio.AbstractEventLoop, timeout_s: float) -> bool:
    """Whether `loop` (a role's, on its own thread) runs a callback within timeout_s; it touches no dependency."""
    if loop is asyncio.get_running_loop():
        return True
    answered: concurrent.futures.Future = concurrent.futures.Future()
    try:
        loop.call_soon_threadsafe(answered.set_result, None)
    except RuntimeError:  # the loop is closed: its role has ended
        return False
    try:
        await asyncio.wait_for(asyncio.wrap_future(answered), timeout_s)
    except TimeoutError:
        return False
    return True


def down_reason(probe: Probe) -> Callable[[], Awaitable[str | None]]:
    """Why the probe's dependency is down (its bounded, cached answer), or None while it is up."""
    async def reason() -> str | None:
        observed = await probe.observe()
        return None if observed.status == "ok" else observed.reason or "down"
    return reason
