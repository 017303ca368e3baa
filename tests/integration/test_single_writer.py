"""Two processor processes race for the same partitions while one is SIGKILLed at random moments,
and one is frozen (SIGSTOP) long enough to be deposed, then thawed to act as a zombie writer.

Afterwards every chain verifies, chain_seq is gapless, and every acknowledged command has
exactly one committed reply and exactly its events in the log.
"""
import asyncio
import json
import random
import uuid
from collections import Counter, defaultdict

import httpx

from infra.adapters import kafka
from schemas.chain import ChainVerdict, verify_chain
from tests.support import (Service, command, make_settings, read_topic, unique, wait_until)

TENANTS = 8
COMMANDS_PER_TENANT = 120
KILLS = 6


def workload(tenant: str) -> list[dict]:
    run_id = str(uuid.uuid4())
    first = [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run_id}),
             command(tenant, {"type": "StartRun", "run_id": run_id})]
    steps = [command(tenant, {"type": "StartStep", "run_id": run_id, "kind": "tool", "name": f"s{i}"})
             for i in range(COMMANDS_PER_TENANT - 2)]
    return first + steps


async def stream(settings, commands: list[dict], done: asyncio.Event) -> None:
    producer = kafka.command_producer(settings)
    await producer.start()
    try:
        for i, c in enumerate(commands):
            await producer.send_and_wait(settings.commands_topic, kafka.dumps(c), key=c["tenant_id"].encode())
            if i % 20 == 0:
                await asyncio.sleep(0.05)
    finally:
        await producer.stop()
        done.set()


async def owned(svc: Service) -> set[int]:
    """The partitions whose commands the service's processor decides now (none while it cannot answer)."""
    try:
        return set((await svc.health()).get("owned_partitions", []))
    except httpx.HTTPError:
        return set()


async def freeze_until_deposed(victim: Service, successor: Service, session_s: float) -> set[int]:
    """SIGSTOP a processor that owns partitions; thaw it once the successor owns them all (a zombie then)."""
    frozen = await wait_until(lambda: owned(victim), 60, f"{victim.url} to own a partition before it is frozen")
    victim.pause()
    try:
        async def successor_took_over() -> bool:
            return frozen <= await owned(successor)
        await wait_until(successor_took_over, session_s + 60,
                         f"{successor.url} to own partitions {sorted(frozen)} of the frozen processor")
    finally:
        victim.resume()
    await victim.ready(30, owning=False)  # thawed and running on its stale state
    return frozen


async def chaos(services: list[Service], done: asyncio.Event, rng: random.Random,
                session_s: float) -> tuple[int, list[set[int]]]:
    """SIGKILL a random processor now and then; every third one is first frozen until deposed."""
    kills, deposed = 0, []
    while kills < KILLS or not done.is_set():
        await asyncio.sleep(rng.uniform(0.3, 1.5))  # a random moment, not a wait for anything
        victim = rng.choice(services)
        if kills % 3 == 1:
            successor = services[1 - services.index(victim)]
            deposed.append(await freeze_until_deposed(victim, successor, session_s))
            await asyncio.sleep(rng.uniform(0.5, 2))  # let the zombie try to write before it dies
        victim.kill()
        kills += 1
        victim.start()
        await victim.ready(90, owning=False)
    return kills, deposed


async def test_two_processors_never_fork_a_chain_under_sigkill():
    settings = make_settings(partitions=3, session_timeout_ms=6000)
    tenants = [unique("tenant-") for _ in range(TENANTS)]
    per_tenant = [workload(t) for t in tenants]
    commands = [c for batch in zip(*per_tenant) for c in batch]
    services = [Service(settings).start(), Service(settings).start()]
    try:
        await services[0].ready(90, owning=False)
        await services[1].ready(90, owning=False)
        done = asyncio.Event()
        rng = random.Random(20261122)
        _, (kills, deposed) = await asyncio.gather(stream(settings, commands, done),
                                                   chaos(services, done, rng, settings.session_timeout_ms / 1000))

        expected = {c["command_id"] for c in commands}

        async def all_replied():
            records = await read_topic(settings, settings.replies_topic)
            seen = {json.loads(r.value)["command_id"] for r in records}
            return records if expected <= seen else None
        reply_records = await wait_until(all_replied, 180, f"replies to all {len(expected)} commands")
    finally:
        for svc in services:
            svc.stop()

    reply_list = [json.loads(r.value) for r in reply_records]
    counts = Counter(r["command_id"] for r in reply_list)
    assert kills >= KILLS
    assert len(deposed) == (kills + 1) // 3, f"every third victim is frozen until deposed: {deposed}"
    assert set(counts) == expected and max(counts.values()) == 1, "a command was answered twice"
    outcomes = {r["command_id"]: r for r in reply_list}
    assert Counter(o["status"] for o in outcomes.values()) == {"accepted": len(expected)}

    envelopes = [json.loads(r.value) for r in await read_topic(settings, settings.events_topic)]
    by_tenant = defaultdict(list)
    for env in envelopes:
        by_tenant[env["tenant_id"]].append(env)
    for tenant in tenants:
        chain = by_tenant[tenant]
        assert verify_chain(tenant, chain) == ChainVerdict(True, COMMANDS_PER_TENANT, chain[-1]["hash"])
        assert [e["chain_seq"] for e in chain] == list(range(1, COMMANDS_PER_TENANT + 1))
    by_command = defaultdict(list)
    for env in envelopes:
        by_command[env["command_id"]].append((env["chain_seq"], env["hash"]))
    for command_id, outcome in outcomes.items():
        assert by_command[command_id] == [(e["chain_seq"], e["hash"]) for e in outcome["events"]]
    assert len(envelopes) == sum(len(o["events"]) for o in outcomes.values())
