"""The project's own chaos test (docs/chaos.md): a steady command stream through two API processes while roles,
the broker and PostgreSQL are killed and restarted; then an independent reading of the log judges the outcome.

On a stack of its own (never the shared one). RUNLEDGER_CHAOS_SECONDS sets how long faults keep coming
(default 60, about what the six kinds of fault take once each); RUNLEDGER_CHAOS_SEED replays a run's fault order and targets (the seed is printed).
Recovery times are printed, never asserted.
"""
import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from infra.adapters.settings import Settings
from tests.chaos.faults import Chaos, streaming_since
from tests.chaos.judge import judge_log, judge_streams, read_log
from tests.chaos.load import Load
from tests.chaos.roles import Cluster
from tests.chaos.sse import Follower
from tests.own_stack import running_stack
from tests.support import REPO, make_settings, unique, wait_until

SECONDS = float(os.environ.get("RUNLEDGER_CHAOS_SECONDS") or 60)
SEED = int(os.environ.get("RUNLEDGER_CHAOS_SEED") or random.randrange(2 ** 32))
TENANTS, RATE = 8, 20.0  # commands per second, all tenants together
pytestmark = pytest.mark.timeout(int(SECONDS) + 1200)


def say(line: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {line}", flush=True)


@pytest.fixture
def stack():
    with running_stack("rlchaos-") as own:
        yield own


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.entry.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


async def settled(check, timeout_s: float, what: str, say_=say) -> bool:
    """Whether check came true within the deadline (the judge then says what differs, if it did not)."""
    try:
        await wait_until(check, timeout_s, what)
        return True
    except AssertionError:
        say_(f"gave up after {timeout_s:.0f} s waiting for {what}")
        return False


def clients(roles: Cluster, tenants: list[str], seed: int) -> tuple[Load, list[Follower]]:
    """The steady load through every API process, and one SSE follower per tenant (each its own API first)."""
    urls = [api.url for api in roles.apis]
    load = Load(urls, tenants, RATE, random.Random(seed + len(tenants)))  # its own: the faults' draws stay the seed's
    return load, [Follower(t, urls[i % 2:] + urls[:i % 2], random.Random(seed + i)) for i, t in enumerate(tenants)]


async def warmed(roles: Cluster, load: Load, followers: list[Follower], tasks: list[asyncio.Task], say_=say) -> None:
    """Start the roles, then the load (tasks[0]) and the followers; return once every tenant is accepting and
    streaming."""
    await roles.start()
    started = time.monotonic()
    tasks += [asyncio.create_task(load.run()), *(asyncio.create_task(f.follow()) for f in followers)]
    await wait_until(lambda: load.all_accepting_since(started) and streaming_since(load, followers, started),
                     120, "every tenant accepting and streaming before the first fault")
    say_(f"warm: every tenant accepting and streaming after {time.monotonic() - started:.1f} s")


@dataclass
class Outcome:
    """What the log, `runledger verify` and each projector process's `verify-readmodels` said after the load."""
    chains: dict[str, list[dict]]
    sizes: dict[str, int]
    verified: list[tuple[str, str]]
    models: list[subprocess.CompletedProcess]  # one per projector process


async def concluded(settings: Settings, roles: Cluster, load: Load, followers: list[Follower],
                    tasks: list[asyncio.Task], say_=say) -> Outcome:
    """Stop the load (tasks[0]; each lane takes its command in hand to a definite answer), read the log, let the
    followers (tasks[1:]) catch up, verify every chain; then restart each projector process with the API on its
    port and data (so its embedded read models are verified inside it) and run verify-readmodels against it."""
    load.stopping = True
    await asyncio.wait_for(tasks[0], 300)
    say_(f"load stopped: {len(load.accepted)} accepted, {len(load.rejected)} rejected")
    chains = await read_log(settings.kafka_bootstrap, settings.events_topic, settings.partitions)
    sizes = {t: len(chains.get(t, [])) for t in load.tenants}
    await settled(lambda: all(f.last_seq >= sizes[f.tenant] for f in followers), 180,
                  "every SSE follower at its tenant's last chain_seq", say_)
    for task in tasks[1:]:
        task.cancel()
    env = roles.apis[0].env()
    results = await asyncio.gather(*(asyncio.to_thread(cli, env, "verify", "--tenant", t, "--no-progress")
                                     for t in load.tenants))
    verified = [(t, r.stdout.strip()) for t, r in zip(load.tenants, results)]
    await roles.stop_watching()  # from here the projector processes are stopped and started on purpose
    for projector in roles.projectors:
        projector.stop()
        projector.as_api_and_projectors()
        projector.start()
    await asyncio.gather(*(p.ready(120, owning=False) for p in roles.projectors))
    tenant_args = [a for t in load.tenants for a in ("--tenant", t)]
    models = [await asyncio.to_thread(  # one at a time: a deployment runs one verification at once
        cli, env, "verify-readmodels", *tenant_args, "--url", p.url, "--no-record", "--no-progress", "--wait", "120")
        for p in roles.projectors]
    return Outcome(chains, sizes, verified, models)


async def ended(tasks: list[asyncio.Task], roles: Cluster) -> list[str]:
    """Cancel what still runs, stop every role; the roles that did not end cleanly."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await roles.stop_watching()
    return roles.stop()


def assert_verdict(outcome: Outcome, load: Load, followers: list[Follower], roles: Cluster, unrecovered: list[str],
                   unclean: list[str]) -> None:
    """The chaos test's verdict: the judge's reading of the log and the streams, every verification, no surprises."""
    chains, sizes, tenants = outcome.chains, outcome.sizes, load.tenants
    assert judge_log(chains, tenants, load.accepted, load.rejected) == {
        "not_gapless": [], "seq_twice": [], "chain_broken": [], "ack_not_in_log": [], "ack_hash_differs": [],
        "ack_events_not_once": [], "claimed_twice": [], "unclaimed_events": [], "rejected_in_log": []}
    assert outcome.verified == [(t, f"OK tenant {t}: {sizes[t]} events, chain_seq 1..{sizes[t]}, head hash "
                                    f"{chains[t][-1]['hash']}") for t in tenants]
    assert judge_streams(chains, followers) == {"ids_not_1_to_n": [], "chain_seqs_not_the_chain": [], "notices": []}
    for projector, models in zip(roles.projectors, outcome.models):
        problems = [line for line in models.stdout.splitlines() if not line.startswith("OK tenant ")]
        assert (projector.name, models.returncode, problems, len(models.stdout.splitlines())) == (
            projector.name, 0, [], len(tenants)), models.stderr
    # this workload is valid throughout: a rejection or another answer than 200/4xx/503/504 is a defect
    assert ([(a.tenant, a.type, a.status, a.body.get("code")) for a in load.rejected], load.unexpected) == ([], [])
    assert (unrecovered, [(e.role, e.returncode) for e in roles.self_exits], unclean) == ([], [], [])


async def test_under_chaos_every_acknowledged_command_is_recorded_once_and_every_reader_agrees(stack):
    say(f"seed {SEED} (RUNLEDGER_CHAOS_SEED={SEED} replays it), {SECONDS:.0f} s of faults, {TENANTS} tenants, "
        f"{RATE:.0f} commands/s")
    rng = random.Random(SEED)
    settings = make_settings(partitions=4, kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url,
                             command_timeout_s=10.0)
    cluster = Cluster(settings)
    tenants = [unique(f"chaos{i}-") for i in range(TENANTS)]
    load, followers = clients(cluster, tenants, SEED)
    chaos = Chaos(stack, cluster, load, followers, rng)
    tasks: list[asyncio.Task] = []
    try:
        await warmed(cluster, load, followers, tasks)
        await chaos.run(SECONDS, say)
        outcome = await concluded(settings, cluster, load, followers, tasks)
    finally:
        unclean = await ended(tasks, cluster)
        for line in chaos.table():
            say(line)
    report(load, followers, cluster, outcome)
    assert_verdict(outcome, load, followers, cluster, chaos.unrecovered(), unclean)


def report(load: Load, followers: list[Follower], cluster: Cluster, outcome: Outcome, say_=say) -> None:
    sizes = outcome.sizes
    per_tenant = {t: sum(a.tenant == t for a in load.accepted) for t in load.tenants}
    say_(f"acknowledged commands: {len(load.accepted)} ({', '.join(map(str, per_tenant.values()))} per tenant), "
         f"events on the log: {sum(sizes.values())}, rejected: {len(load.rejected)}, "
         f"unexpected: {len(load.unexpected)}")
    say_(f"retries by cause: {dict(sorted(load.retried.items()))}; most attempts for one command: "
         f"{max((a.attempts for a in load.accepted), default=0)}")
    say_(f"SSE: {sum(len(f.received) for f in followers)} events received over "
         f"{sum(f.connects for f in followers)} connections ({sum(f.hang_ups for f in followers)} ended by the "
         f"follower); refusals: "
         f"{sum(sum(f.refusals.values()) for f in followers)}")
    for exit_ in cluster.self_exits:
        say_(f"SELF-EXIT {exit_.role} status {exit_.returncode}:\n{exit_.log_tail}")
    for projector, models in zip(cluster.projectors, outcome.models):
        say_(f"read models in {projector.name}: exit {models.returncode}\n{models.stdout}{models.stderr}")
