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

import pytest

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


async def settled(check, timeout_s: float, what: str) -> bool:
    """Whether check came true within the deadline (the judge then says what differs, if it did not)."""
    try:
        await wait_until(check, timeout_s, what)
        return True
    except AssertionError:
        say(f"gave up after {timeout_s:.0f} s waiting for {what}")
        return False


async def test_under_chaos_every_acknowledged_command_is_recorded_once_and_every_reader_agrees(stack):
    say(f"seed {SEED} (RUNLEDGER_CHAOS_SEED={SEED} replays it), {SECONDS:.0f} s of faults, {TENANTS} tenants, "
        f"{RATE:.0f} commands/s")
    rng = random.Random(SEED)
    settings = make_settings(partitions=4, kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url,
                             command_timeout_s=10.0)
    cluster = Cluster(settings)
    tenants = [unique(f"chaos{i}-") for i in range(TENANTS)]
    urls = [api.url for api in cluster.apis]
    load = Load(urls, tenants, RATE, random.Random(SEED + TENANTS))  # its own: the faults' draws stay the seed's
    followers = [Follower(t, urls[i % 2:] + urls[:i % 2], random.Random(SEED + i)) for i, t in enumerate(tenants)]
    chaos = Chaos(stack, cluster, load, followers, rng)
    tasks: list[asyncio.Task] = []
    try:
        await cluster.start()
        started = time.monotonic()
        tasks = [asyncio.create_task(load.run()), *(asyncio.create_task(f.follow()) for f in followers)]
        await wait_until(lambda: load.all_accepting_since(started) and streaming_since(load, followers, started),
                         120, "every tenant accepting and streaming before the first fault")
        say(f"warm: every tenant accepting and streaming after {time.monotonic() - started:.1f} s")
        await chaos.run(SECONDS, say)
        load.stopping = True  # each lane takes its command in hand to a definite answer, then stops
        await asyncio.wait_for(tasks[0], 300)
        say(f"load stopped after {time.monotonic() - started:.0f} s: {len(load.accepted)} accepted, "
            f"{len(load.rejected)} rejected")
        chains = await read_log(settings.kafka_bootstrap, settings.events_topic, settings.partitions)
        sizes = {t: len(chains.get(t, [])) for t in tenants}
        await settled(lambda: all(f.last_seq >= sizes[f.tenant] for f in followers), 180,
                      "every SSE follower at its tenant's last chain_seq")
        for task in tasks[1:]:
            task.cancel()
        env = cluster.apis[0].env()
        verified = [(t, (await asyncio.to_thread(cli, env, "verify", "--tenant", t, "--no-progress")).stdout.strip())
                    for t in tenants]
        await cluster.stop_watching()  # from here the projector is stopped and started on purpose
        projector = cluster.projector
        projector.stop()
        projector.as_api_and_projectors()
        projector.start()
        await projector.ready(120, owning=False)
        tenant_args = [a for t in tenants for a in ("--tenant", t)]
        models = await asyncio.to_thread(cli, env, "verify-readmodels", *tenant_args, "--url", projector.url,
                                         "--no-record", "--no-progress", "--wait", "120")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.stop_watching()
        unclean = cluster.stop()
        for line in chaos.table():
            say(line)
    report(load, followers, cluster, sizes)
    say(f"read models: exit {models.returncode}\n{models.stdout}{models.stderr}")

    assert judge_log(chains, tenants, load.accepted, load.rejected) == {
        "not_gapless": [], "seq_twice": [], "chain_broken": [], "ack_not_in_log": [], "ack_hash_differs": [],
        "ack_events_not_once": [], "claimed_twice": [], "unclaimed_events": [], "rejected_in_log": []}
    assert verified == [(t, f"OK tenant {t}: {sizes[t]} events, chain_seq 1..{sizes[t]}, head hash "
                            f"{chains[t][-1]['hash']}") for t in tenants]
    assert judge_streams(chains, followers) == {"ids_not_1_to_n": [], "chain_seqs_not_the_chain": [], "notices": []}
    problems = [line for line in models.stdout.splitlines() if not line.startswith("OK tenant ")]
    assert (models.returncode, problems, len(models.stdout.splitlines())) == (0, [], TENANTS), models.stderr
    # this workload is valid throughout: a rejection or another answer than 200/4xx/503/504 is a defect
    assert ([(a.tenant, a.type, a.status, a.body.get("code")) for a in load.rejected], load.unexpected) == ([], [])
    assert (chaos.unrecovered(), [(e.role, e.returncode) for e in cluster.self_exits], unclean) == ([], [], [])


def report(load: Load, followers: list[Follower], cluster: Cluster, sizes: dict[str, int]) -> None:
    per_tenant = {t: sum(a.tenant == t for a in load.accepted) for t in load.tenants}
    say(f"acknowledged commands: {len(load.accepted)} ({', '.join(map(str, per_tenant.values()))} per tenant), "
        f"events on the log: {sum(sizes.values())}, rejected: {len(load.rejected)}, unexpected: {len(load.unexpected)}")
    say(f"retries by cause: {dict(sorted(load.retried.items()))}; most attempts for one command: "
        f"{max((a.attempts for a in load.accepted), default=0)}")
    say(f"SSE: {sum(len(f.received) for f in followers)} events received over "
        f"{sum(f.connects for f in followers)} connections ({sum(f.hang_ups for f in followers)} ended by the "
        f"follower); refusals: "
        f"{sum(sum(f.refusals.values()) for f in followers)}")
    for exit_ in cluster.self_exits:
        say(f"SELF-EXIT {exit_.role} status {exit_.returncode}:\n{exit_.log_tail}")
