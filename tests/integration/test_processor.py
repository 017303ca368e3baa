"""The command processor against the real broker: chaining, headers, restart, fencing, fail-closed."""
import asyncio
import json
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from commands.processor import CommandProcessor
from infra.adapters import kafka
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import encode
from tests.support import (REPO, command, events, make_settings, produce_commands, read_topic,
                           replies, unique, wait_until)


@asynccontextmanager
async def running_processor(settings):
    processor = CommandProcessor(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    await wait_until(lambda: len(processor.owners) == settings.partitions,
                     60, "the processor to own every partition")
    try:
        yield processor
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def outcomes_for(settings, sent):
    ids = {c["command_id"] for c in sent}

    async def all_replied():
        got = await replies(settings)
        return got if ids <= set(got) else None
    return await wait_until(all_replied, 60, f"{len(ids)} replies")


def run_lifecycle(tenant: str, run_id: str) -> list[dict]:
    return [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run_id}),
            command(tenant, {"type": "StartRun", "run_id": run_id}),
            command(tenant, {"type": "StartStep", "run_id": run_id, "kind": "llm", "name": "s"})]


async def test_commands_become_chained_events_with_cloudevents_headers():
    settings = make_settings()
    tenants = [unique("tenant-") for _ in range(4)]
    sent = [c for t in tenants for c in run_lifecycle(t, str(uuid.uuid4()))]
    async with running_processor(settings):
        await produce_commands(settings, sent)
        outcomes = await outcomes_for(settings, sent)
    assert {o["status"] for o in outcomes.values()} == {"accepted"}
    records = await read_topic(settings, settings.events_topic)
    by_tenant: dict[str, list] = {}
    for record in records:
        env = json.loads(record.value)
        headers = dict(record.headers)
        assert record.key == env["tenant_id"].encode()
        assert record.partition == kafka.partition_for(env["tenant_id"], settings.partitions)
        assert headers["ce_id"] == env["event_id"].encode()
        assert headers["ce_type"] == f"dev.runledger.{env['type']}".encode()
        assert headers["ce_specversion"] == b"1.0"
        by_tenant.setdefault(env["tenant_id"], []).append(env)
    assert sorted(by_tenant) == sorted(tenants)
    for tenant, chain in by_tenant.items():
        assert verify_chain(tenant, chain) == ChainVerdict(True, 3, chain[-1]["hash"])
        assert [e["type"] for e in chain] == ["run.requested", "run.started", "run.step_started"]
    for c in sent:
        appended = [(e["chain_seq"], e["hash"]) for e in by_tenant[c["tenant_id"]] if e["command_id"] == c["command_id"]]
        assert appended == [(e["chain_seq"], e["hash"]) for e in outcomes[c["command_id"]]["events"]]


async def test_a_backlog_larger_than_a_batch_is_paused_drained_in_order_and_loses_nothing():
    # Given a processor whose transactions hold at most 5 commands, and one partition
    settings = make_settings(partitions=1, batch_max=5)
    tenant = unique("tenant-")
    run_ids = [str(uuid.uuid4()) for _ in range(40)]
    sent = [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": r}) for r in run_ids]
    # When 40 commands are already waiting when it takes the partition (a backlog of 8 batches)
    await kafka.ensure_topics(settings)
    await produce_commands(settings, sent)
    async with running_processor(settings) as processor:
        outcomes = await outcomes_for(settings, sent)
        transactions = processor.stats["transactions"]
    # Then every command is decided once, in the order it was sent, in transactions of ≤ 5
    assert {o["status"] for o in outcomes.values()} == {"accepted"}
    chain = [e for e in await events(settings) if e["tenant_id"] == tenant]
    assert verify_chain(tenant, chain) == ChainVerdict(True, 40, chain[-1]["hash"])
    assert [e["aggregate_id"] for e in chain] == run_ids
    assert transactions >= 8


async def test_a_restarted_processor_still_deduplicates_and_fires_timers():
    settings = make_settings()
    tenant, run_id = unique("tenant-"), str(uuid.uuid4())
    approval = {"type": "RequestApproval", "run_id": run_id, "action": "deploy",
                "risk_tier": "high", "expires_in_seconds": 3}
    first = run_lifecycle(tenant, run_id) + [command(tenant, approval, key="approval-1")]
    async with running_processor(settings):
        await produce_commands(settings, first)
        outcomes = await outcomes_for(settings, first)
    original = outcomes[first[-1]["command_id"]]
    assert original["status"] == "accepted"
    before = await events(settings)
    assert "approval.expired" not in [e["type"] for e in before]

    retry = command(tenant, approval, key="approval-1")
    async with running_processor(settings):
        await produce_commands(settings, [retry])
        replayed = (await outcomes_for(settings, [retry]))[retry["command_id"]]

        async def expired():
            return [e for e in await events(settings) if e["type"] == "approval.expired"]
        fired = await wait_until(expired, 30, "approval.expired from the restarted processor")
    assert (replayed["replayed"], replayed["events"]) == (True, original["events"])
    assert [e["aggregate_id"] for e in fired] == [original["aggregate_id"]]
    after = await events(settings)
    assert [e["command_id"] for e in after].count(first[-1]["command_id"]) == len(original["events"])
    assert [e["type"] for e in after] == ["run.requested", "run.started", "run.step_started", "approval.requested",
                                          "run.waiting_for_approval", "approval.expired", "run.approval_resolved"]
    assert verify_chain(tenant, after) == ChainVerdict(True, 7, after[-1]["hash"])


async def test_the_broker_fences_a_deposed_transactional_writer():
    settings = make_settings(partitions=1)
    await kafka.ensure_topics(settings)
    old = kafka.transactional_producer(settings, 0)
    await old.start()
    await old.begin_transaction()
    await old.send_and_wait(settings.events_topic, b'{"zombie": true}', partition=0)
    new = kafka.transactional_producer(settings, 0)
    await new.start()
    with pytest.raises(ProducerFenced):
        await old.commit_transaction()
    async with new.transaction():
        await new.send_and_wait(settings.events_topic, b'{"owner": true}', partition=0)
    await new.stop()
    await old.stop()
    assert [r.value for r in await read_topic(settings, settings.events_topic)] == [b'{"owner": true}']


async def test_a_broken_chain_stops_the_processor_and_verify_names_the_seq():
    settings = make_settings(partitions=1)
    tenant = unique("tenant-")
    sent = run_lifecycle(tenant, str(uuid.uuid4()))
    async with running_processor(settings):
        await produce_commands(settings, sent)
        await outcomes_for(settings, sent)
    chain = await events(settings)
    forged = {**chain[1], "chain_seq": 4, "prev_hash": chain[2]["hash"],
              "payload": {"note": "inserted by hand"}}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(settings.events_topic, encode(forged), key=tenant.encode(), partition=0)
    await producer.stop()

    processor = CommandProcessor(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    await wait_until(lambda: processor.broken, 60, "the processor to refuse the partition")
    assert processor.owners == {} and not processor.healthy
    assert f"tenant {tenant} chain_seq 4" in processor.broken[0] and "hash" in processor.broken[0]
    stop.set()
    await asyncio.wait_for(task, 60)

    result = subprocess.run([sys.executable, "-m", "infra.entry.cli", "verify", "--tenant", tenant],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=_cli_env(settings))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"BROKEN tenant {tenant}: first bad chain_seq 4" in result.stdout
    ok = subprocess.run([sys.executable, "-m", "infra.entry.cli", "verify", "--tenant", "nobody-here"],
                        cwd=REPO, capture_output=True, text=True, timeout=120, env=_cli_env(settings))
    assert ok.returncode == 1 and "EMPTY tenant nobody-here" in ok.stdout


def _cli_env(settings):
    import os
    return {**os.environ, "RUNLEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RUNLEDGER_TOPIC_PREFIX": settings.topic_prefix,
            "RUNLEDGER_JWT_SECRET": settings.jwt_secret.get_secret_value()}


async def test_a_fenced_processor_drops_its_state_and_retakes_the_partition_from_the_log():
    settings = make_settings(partitions=1)
    tenant, run_id = unique("tenant-"), str(uuid.uuid4())
    first = run_lifecycle(tenant, run_id)
    second = [command(tenant, {"type": "StartStep", "run_id": run_id, "kind": "tool", "name": f"t{i}"})
              for i in range(5)]
    async with running_processor(settings) as processor:
        processor.fenced_backoff_s = 0.5
        await produce_commands(settings, first)
        await outcomes_for(settings, first)
        usurper = kafka.transactional_producer(settings, 0)
        await usurper.start()
        await usurper.stop()
        await produce_commands(settings, second)
        outcomes = await outcomes_for(settings, second)
        assert processor.stats["fenced"] == 1
    all_replies = [json.loads(r.value) for r in await read_topic(settings, settings.replies_topic)]
    assert sorted(r["command_id"] for r in all_replies) == sorted(c["command_id"] for c in first + second)
    assert {o["status"] for o in outcomes.values()} == {"accepted"}
    chain = await events(settings)
    assert verify_chain(tenant, chain) == ChainVerdict(True, 3 + 5, chain[-1]["hash"])
