"""Failover on the real broker and PostgreSQL: a successor of a SIGKILLed processor takes over from the fold
snapshot the dead one left, or from its own follower fold, folding exactly what a full replay folds; a snapshot
save killed mid-transaction leaves the previous snapshot."""
import asyncio
import logging
import signal
import subprocess
import sys
import uuid

import psycopg

from commands.ownership import Ownership, PartitionOwner
from commands.processor import CommandProcessor
from commands.snapshots import Snapshot, code_digest, mac_key
from commands.snapshots_pg import TABLE, PgSnapshots
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.kafka import partition_for
from tests.support import (DATABASE_URL, REPO, Service, command, events, make_settings, produce_commands, replies,
                           unique, wait_until)
from tests.unit.test_snapshot_takeover import fold


def lifecycle(tenant: str) -> list[dict]:
    run = str(uuid.uuid4())
    return [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run}),
            command(tenant, {"type": "StartRun", "run_id": run})]


async def snapshot_events(settings) -> int:
    async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
        exists = (await (await conn.execute("SELECT to_regclass(%s)", (TABLE,))).fetchone())[0]
        if not exists:
            return 0
        row = await (await conn.execute(f"SELECT events FROM {TABLE} WHERE scope = %s AND partition = 0",
                                        (settings.topic_prefix,))).fetchone()
    return row[0] if row else 0


async def answered(settings, sent: list[dict]) -> dict:
    ids = {c["command_id"] for c in sent}

    async def all_there():
        got = await replies(settings)
        return got if ids <= set(got) else None
    return await wait_until(all_there, 90, f"{len(ids)} replies")


def processor_process(settings, path) -> subprocess.Popen:
    env = {**Service(settings).env(), "RUNLEDGER_SNAPSHOT_EVERY": str(settings.snapshot_every)}
    return subprocess.Popen([sys.executable, "-m", "infra.entry.cli", "serve", "--no-api", "--no-projectors"],
                            cwd=REPO, env=env, stdout=open(path, "wb"), stderr=subprocess.STDOUT)


async def test_a_successor_of_a_killed_processor_takes_over_from_its_snapshot_and_continues_each_chain(caplog):
    # Given a processor (a process of its own) that decided 20 commands, snapshotted them, then 4 more
    settings = make_settings(partitions=1, snapshot_every=10)
    tenants = [unique("t"), unique("t")]
    first = [c for t in tenants for _ in range(5) for c in lifecycle(t)]
    dead = processor_process(settings, f"/tmp/runledger-test-{settings.topic_prefix}-failover.log")
    try:
        await produce_commands(settings, first)
        await answered(settings, first)
        await wait_until(lambda: snapshot_events(settings), 60, "a snapshot of the partition")
        snapshotted = await snapshot_events(settings)
        tail = [c for t in tenants for c in lifecycle(t)]
        await produce_commands(settings, tail)
        await answered(settings, tail)
    finally:
        dead.send_signal(signal.SIGKILL)  # When it is killed
        dead.wait(30)
    heads = {e["tenant_id"]: (e["chain_seq"], e["hash"]) for e in await events(settings)}
    # Then a successor takes the partition over from that snapshot, replaying only what followed it
    caplog.set_level(logging.INFO, "runledger.processor")
    successor, stop = CommandProcessor(settings), asyncio.Event()
    task = asyncio.create_task(successor.run(stop))
    try:
        await wait_until(lambda: successor.owners or task.done(), 90, "the successor to own the partition")
        owning = [(r.from_snapshot, r.replayed) for r in caplog.records if hasattr(r, "owning")]
        assert owning[0][0] == snapshotted and owning[0][0] + owning[0][1] == 24 and snapshotted >= 10
        # and its fold is what a full replay folds, and the next commands continue each chain
        replayed = PartitionOwner(0, None)
        await Ownership(settings, KafkaLog(settings), {"rebuilds": 0}).rebuild(replayed)
        assert fold(successor.owners[0]) == fold(replayed)
        sent = [lifecycle(t)[0] for t in tenants]
        await produce_commands(settings, sent)
        got = await answered(settings, sent)
        for c in sent:
            assert got[c["command_id"]]["events"][0]["chain_seq"] == heads[c["tenant_id"]][0] + 1
        new = {e["tenant_id"]: e for e in (await events(settings))[-2:]}
        assert {t: (e["chain_seq"], e["prev_hash"]) for t, e in new.items()} == {
            t: (heads[t][0] + 1, heads[t][1]) for t in tenants}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_snapshot_save_killed_mid_transaction_leaves_the_previous_snapshot():
    store, scope, key = PgSnapshots(DATABASE_URL), unique("scope"), mac_key(b"\x05" * 32)
    previous = Snapshot(0, 41, "ab" * 32, 40, "cd" * 32, 42, code_digest(), b"the fold as of 41", "").sealed(key)
    await store.save(scope, previous)
    writer = await psycopg.AsyncConnection.connect(DATABASE_URL)
    await writer.execute(f"UPDATE {TABLE} SET events_offset = 99, body = %s WHERE scope = %s AND partition = 0",
                         (b"half of a newer fold", scope))  # inside the writer's transaction, not committed
    async with await psycopg.AsyncConnection.connect(DATABASE_URL, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (writer.info.backend_pid,))  # the writer dies
    loaded = await store.load(scope, 0)
    assert (loaded, loaded.verifies(key)) == (previous, True)


def one_tenant_per_partition(partitions: int) -> list[str]:
    found: dict[int, str] = {}
    while len(found) < partitions:
        tenant = unique("t")
        found.setdefault(partition_for(tenant, partitions), tenant)
    return [found[p] for p in range(partitions)]


async def test_a_follower_takes_a_killed_processors_partition_over_replaying_nothing_it_had_folded(caplog):
    # Given two processors each owning one of two partitions, one of them a process of its own, and the other
    # (in this process) following its partition
    settings = make_settings(partitions=2, snapshot_every=0)
    tenants = one_tenant_per_partition(2)
    caplog.set_level(logging.INFO, "runledger.processor")
    survivor, stop = CommandProcessor(settings), asyncio.Event()
    task = asyncio.create_task(survivor.run(stop))
    dead = processor_process(settings, f"/tmp/runledger-test-{settings.topic_prefix}-follower.log")
    try:
        await wait_until(lambda: len(survivor.owners) == 1 and survivor.assigned == set(survivor.owners) or task.done(),
                         90, "the two processors to own a partition each")
        sent = [c for t in tenants for _ in range(4) for c in lifecycle(t)]
        await produce_commands(settings, sent)
        await answered(settings, sent)
        (theirs,) = {0, 1} - set(survivor.owners)
        followed = lambda: survivor.ownership.follower.followed.get(theirs)  # noqa: E731
        await wait_until(lambda: followed() and followed().caught_up and
                         followed().tenants.get(tenants[theirs]) is not None and
                         followed().tenants[tenants[theirs]].chain.head_seq == 8, 60, "the follower to catch up")
    finally:
        dead.send_signal(signal.SIGKILL)  # When the other one is killed
        dead.wait(30)
    heads = {e["tenant_id"]: (e["chain_seq"], e["hash"]) for e in await events(settings)}
    try:
        # Then the survivor takes its partition over from the follower's fold, reading nothing more from the log
        await wait_until(lambda: theirs in survivor.owners or task.done(), 90, "the survivor to own both")
        owning = [r for r in caplog.records if getattr(r, "owning", None) == theirs][-1]  # (before the other joined, too)
        assert (owning.from_follower, owning.tail, survivor.owners[theirs].followed) == (True, 0, 8)
        # and its fold is what a full replay folds, and the next commands continue each chain
        replayed = PartitionOwner(theirs, None)
        await Ownership(settings, KafkaLog(settings), {"rebuilds": 0}).rebuild(replayed)
        assert fold(survivor.owners[theirs]) == fold(replayed)
        next_ = [lifecycle(t)[0] for t in tenants]
        await produce_commands(settings, next_)
        got = await answered(settings, next_)
        assert [got[c["command_id"]]["events"][0]["chain_seq"] for c in next_] == [9, 9]
        new = {e["tenant_id"]: e for e in await events(settings) if e["chain_seq"] == 9}
        assert {t: e["prev_hash"] for t, e in new.items()} == {t: heads[t][1] for t in tenants}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
