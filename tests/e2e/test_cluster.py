"""The ledger on a three-broker KRaft cluster (infra/local/cluster.sh; docs/scaling.md), judged as the chaos test
judges.

Topics with replication factor 3 and min.insync.replicas 2; two API processes, two processors and two projector
processes: each projector process is a replica of its own for the read models it keeps in itself (embedded chdb:
audit, cost; the archive files: its own consumer groups, every partition), and both share one group per
PostgreSQL read model (runs, approvals, channels, …), splitting its partitions. Under the chaos test's steady
load and SSE followers, the broker leading the most partitions is stopped (SIGTERM) and started again, then the
one leading the most of the others is SIGKILLed and started again; leadership must move off each while it is
down. The same judge and verifications as the chaos test's then read the log, the streams and each projector
process's read models. Recovery times are printed, not asserted (beyond the chaos test's 180 s to recover).
RUNLEDGER_CLUSTER_SECONDS (default 0) keeps broker faults coming, stop and kill in turn, until that many seconds
are spent.

The cluster is the test's own (six free ports, a temporary home; down and removed after it); PostgreSQL is the
one the suite runs on (infra/local/test.sh): no fault touches it, and every schema is under the test's prefix.
"""
import asyncio
import os
import random
import time

import pytest

from bench.lib.cluster import KafkaCluster
from tests.chaos.cluster import INTERNAL_TOPICS, busiest, describe, leaders, out_of_sync, topic_config
from tests.chaos.faults import Fault, fmt, recovered
from tests.chaos.load import Load
from tests.chaos.roles import Cluster
from tests.chaos.sse import Follower
from tests.e2e.test_chaos import assert_verdict, clients, concluded, ended, report, warmed
from tests.support import make_settings, unique, wait_until

SECONDS = float(os.environ.get("RUNLEDGER_CLUSTER_SECONDS") or 0)
SEED = int(os.environ.get("RUNLEDGER_CHAOS_SEED") or random.randrange(2 ** 32))
TENANTS, PARTITIONS = 8, 6
pytestmark = pytest.mark.timeout(int(SECONDS) + 900)


def say(line: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {line}", flush=True)


@pytest.fixture
def kafka():
    cluster = KafkaCluster("rlclustertest-")
    try:
        cluster.up()
        yield cluster
    finally:
        assert cluster.down() == [], "broker processes still running after cluster.sh down"


async def test_on_three_brokers_a_broker_stopped_and_one_killed_lose_nothing_and_leadership_moves(kafka):
    say(f"seed {SEED}; cluster {kafka.bootstrap}; {TENANTS} tenants, {PARTITIONS} partitions, {SECONDS:.0f} s of "
        "further faults")
    rng = random.Random(SEED)
    settings = make_settings(partitions=PARTITIONS, kafka_bootstrap=kafka.bootstrap, command_timeout_s=10.0,
                             replication_factor=3, min_insync_replicas=2)
    roles = Cluster(settings, projectors=2)
    tenants = [unique(f"cluster{i}-") for i in range(TENANTS)]
    load, followers = clients(roles, tenants, SEED)
    topics = [settings.commands_topic, settings.events_topic, settings.replies_topic]
    faults: list[BrokerFault] = []
    tasks: list[asyncio.Task] = []
    try:
        await warmed(roles, load, followers, tasks, say)
        replicas = {t: sorted({len(d["replicas"]) for d in (await describe(kafka.bootstrap, t)).values()})
                    for t in topics}
        min_isr = {t: await topic_config(kafka.bootstrap, t, "min.insync.replicas") for t in topics}
        partitions = len(await leaders(kafka.bootstrap, settings.events_topic))
        kinds, faulted, ends_at = ["stop", "kill"], (), float("inf")
        while kinds or time.monotonic() < ends_at:
            if faults:
                await asyncio.sleep(rng.uniform(3, 6))  # steady load between faults (the plan, not a wait)
            how = kinds.pop(0) if kinds else rng.choice(("stop", "kill"))
            node = busiest(await leaders(kafka.bootstrap, settings.events_topic), faulted)
            faults.append(BrokerFault(kafka, how, node, topics))
            say((await faults[-1].run(load, followers)).line())
            faulted = (node,)  # the next fault is on another node
            if not kinds and ends_at == float("inf"):
                ends_at = time.monotonic() + SECONDS
        outcome = await concluded(settings, roles, load, followers, tasks, say)
    finally:
        unclean = await ended(tasks, roles)
    report(load, followers, roles, outcome, say)

    assert (replicas, min_isr, partitions) == ({t: [3] for t in topics}, {t: "2" for t in topics}, PARTITIONS)
    assert [(f.fault.target, f.led, f.still_led()) for f in faults] == [
        (f.fault.target, f.led, []) for f in faults]
    assert [f.fault.target for f in faults if not f.led] == []  # each fault took away a leader of something
    unrecovered = [f"{f.kind} {f.target}" for b in faults for f in (b.fault, b.restart)
                   if f.accepting_at is None or f.streaming_at is None]
    assert_verdict(outcome, load, followers, roles, unrecovered, unclean)


class BrokerFault:
    """Stop or kill a node; wait until leadership of every partition it led has moved off it, and until every
    tenant is accepting and streaming again with it down; start it again, and wait until every partition (the
    ledger's and the internal topics') has three replicas in sync before the next fault."""

    def __init__(self, kafka: KafkaCluster, how: str, node: int, topics: list[str]):
        self.kafka, self.how, self.node, self.topics = kafka, how, node, topics
        self.fault = Fault(f"broker {how}", f"node {node} :{kafka.port(node)}", 0.0)
        self.restart = Fault(f"broker {how} restart", self.fault.target, 0.0)
        self.led: list[tuple[str, int]] = []
        self.while_down: dict[tuple[str, int], int] = {}
        self.seconds: dict[str, float] = {}

    def still_led(self) -> list[tuple[str, int]]:
        """The partitions it led that had it (or no one) as leader while it was down."""
        return [tp for tp in self.led if self.while_down.get(tp, self.node) in (self.node, -1)]

    async def leading(self) -> dict[tuple[str, int], int]:
        return {(t, p): leader for t in self.topics for p, leader in (await leaders(self.kafka.bootstrap, t)).items()}

    async def run(self, load: Load, followers: list[Follower]) -> "BrokerFault":
        self.led = sorted(tp for tp, leader in (await self.leading()).items() if leader == self.node)
        self.fault.at = time.monotonic()
        await (self.kafka.stop if self.how == "stop" else self.kafka.kill)(self.node)
        self.seconds["gone"] = time.monotonic() - self.fault.at

        async def moved():
            now = await self.leading()
            return now if all(leader not in (self.node, -1) for leader in now.values()) else None
        self.while_down = await wait_until(moved, 60, f"leadership to move off node {self.node}")
        self.seconds["moved"] = time.monotonic() - self.fault.at
        await recovered(self.fault, load, followers)
        await asyncio.sleep(3)  # steady load with the node down: part of the fault, not a wait for anything
        self.restart.at = time.monotonic()
        await self.kafka.start(self.node)
        self.restart.restarted_at = time.monotonic()
        everything = [*self.topics, *INTERNAL_TOPICS]
        await wait_until(lambda: self.in_sync(everything), 120, "every partition with 3 in-sync replicas again")
        self.seconds["in_sync"] = time.monotonic() - self.restart.at
        await recovered(self.restart, load, followers)
        return self

    async def in_sync(self, topics: list[str]) -> bool:
        return await out_of_sync(self.kafka.bootstrap, topics) == []

    def line(self) -> str:
        s, f, r = self.seconds, self.fault, self.restart
        return (f"{f.kind} {f.target}: gone in {s.get('gone', 0):.1f} s; leaders of {len(self.led)} partitions moved "
                f"{s.get('moved', float('nan')):.1f} s, every tenant accepting {fmt(f.seconds('accepting', 'fault'))}"
                f" s, streaming {fmt(f.seconds('streaming', 'fault'))} s after the fault (node down); started again "
                f"in {fmt(r.seconds('restarted', 'fault'))} s, all in sync {s.get('in_sync', float('nan')):.1f} s, "
                f"accepting {fmt(r.seconds('accepting', 'fault'))} s, streaming "
                f"{fmt(r.seconds('streaming', 'fault'))} s after its start began")
