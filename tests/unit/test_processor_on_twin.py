"""The command processor on the in-memory event log: ownership, pausing, fencing, rebalances and timers,
in seconds and deterministically (the twin passes the same contract as Kafka: tests/eventlog_contract.py)."""
import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import pytest

from commands.processor import CommandProcessor
from domain import handlers
from domain.commands import StartRun
from domain.errors import InvalidState
from infra.adapters.eventlog import TopicPartition
from infra.adapters.eventlog.memory import MemoryLog
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import GENESIS_HASH
from tests.support import command, make_settings, unique, wait_until


class Clock:
    def __init__(self):
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def twin(settings) -> MemoryLog:
    return MemoryLog([settings.commands_topic, settings.events_topic, settings.replies_topic], settings.partitions)


@asynccontextmanager
async def running(settings, log: MemoryLog, clock=None, owning: int | None = None, **given):
    """`given`: more of CommandProcessor's arguments (snapshots=, keys=, ...)."""
    processor = CommandProcessor(settings, clock or Clock(), log_=log, **given)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    if owning is not None:
        await wait_until(lambda: len(processor.owners) == owning or task.done(), 10, f"owning {owning}")
    try:
        yield processor
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def send(log: MemoryLog, settings, commands: list[dict]) -> None:
    for c in commands:
        log.produce(settings.commands_topic, c["tenant_id"].encode(), json.dumps(c).encode())


def topic(log: MemoryLog, name: str) -> list[dict]:
    return [json.loads(r.value) for p in range(log.partitions) for r in log.visible(TopicPartition(name, p), 0)]


async def answered(log: MemoryLog, settings, commands: list[dict]) -> dict[str, list[dict]]:
    """Wait until every command has a reply; return the replies per command id (to count them)."""
    ids = {c["command_id"] for c in commands}

    def replies():
        got: dict[str, list[dict]] = {}
        for r in topic(log, settings.replies_topic):
            got.setdefault(r["command_id"], []).append(r)
        return got if ids <= set(got) else None
    return await wait_until(replies, 10, f"{len(ids)} replies")


def lifecycle(tenant: str) -> list[dict]:
    run = str(uuid.uuid4())
    return [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run}),
            command(tenant, {"type": "StartRun", "run_id": run}),
            command(tenant, {"type": "StartStep", "run_id": run, "kind": "llm", "name": "s"})]


def chains_verify(log: MemoryLog, settings, tenants: list[str]) -> list[int]:
    events = topic(log, settings.events_topic)
    lengths = []
    for tenant in tenants:
        chain = [e for e in events if e["tenant_id"] == tenant]
        head = chain[-1]["hash"] if chain else GENESIS_HASH
        assert verify_chain(tenant, chain) == ChainVerdict(True, len(chain), head), tenant  # every event verified
        lengths.append(len(chain))
    return lengths


async def test_commands_are_decided_once_in_chained_order():
    settings = make_settings(partitions=2)
    log = twin(settings)
    tenants = [unique("t") for _ in range(4)]
    sent = [c for t in tenants for c in lifecycle(t)]
    async with running(settings, log, owning=2):
        send(log, settings, sent)
        replies = await answered(log, settings, sent)
    assert {len(r) for r in replies.values()} == {1}
    assert {r[0]["status"] for r in replies.values()} == {"accepted"}
    assert chains_verify(log, settings, tenants) == [3, 3, 3, 3]


async def test_a_rebalance_landing_mid_acquire_never_ends_the_process_nor_leaves_a_partition_stale():
    # Given a processor that owns every partition, then a second member joins: partition 2 stays
    # with the first, which acquires it again, and while it fences a third member joins and
    # partition 2 moves to that third member (the rebalance lands mid-acquire)
    settings = make_settings(partitions=3)
    log = twin(settings)
    async with running(settings, log, owning=3) as first:
        joined = []

        async def third_joins(transactional_id: str) -> None:
            if not joined and transactional_id.endswith(".p2"):
                joined.append(CommandProcessor(settings, Clock(), log_=log))
                joined.append(asyncio.create_task(joined[0].run(stop_third)))
                await asyncio.sleep(0)  # the rebalance task starts: partition 2 moves mid-acquire
                await log.settled()
        stop_third = asyncio.Event()
        log.before_start = third_joins
        async with running(settings, log) as second:
            await wait_until(lambda: joined, 10, "the third member to join mid-acquire")
            processors = [first, second, joined[0]]

            def settled_ownership():
                owned = [set(p.owners) for p in processors]
                assigned = [{tp.partition for tp in p.consumer.assignment()} for p in processors]
                return owned == assigned and sorted(x for o in owned for x in o) == [0, 1, 2] and owned
            owned = await wait_until(settled_ownership, 10, "each partition owned by exactly its assignee")
            # Then no process ended, each owned partition is its own and flowing (not paused), and commands work
            assert [len(o) for o in owned] == [1, 1, 1]
            assert [p.consumer.paused() for p in processors] == [set(), set(), set()]
            tenants = [unique("t") for _ in range(6)]
            sent = [c for t in tenants for c in lifecycle(t)]
            send(log, settings, sent)
            replies = await answered(log, settings, sent)
            assert {len(r) for r in replies.values()} == {1}
            assert chains_verify(log, settings, tenants) == [3] * 6
        stop_third.set()
        await asyncio.wait_for(joined[1], 10)


async def test_an_owned_partition_left_paused_is_healed_and_counted():
    settings = make_settings(partitions=1)
    log = twin(settings)
    async with running(settings, log, owning=1) as processor:
        tp = TopicPartition(settings.commands_topic, 0)
        processor.consumer.pause(tp)  # what a stale on_assigned does after an acquire that finished late
        sent = lifecycle(unique("t"))
        send(log, settings, sent)
        replies = await answered(log, settings, sent)
        assert (processor.stats["healed"], processor.consumer.paused()) == (1, set())
    assert {r[0]["status"] for r in replies.values()} == {"accepted"}


async def test_a_backlog_beyond_a_batch_is_paused_then_resumed_and_decided_in_order():
    settings = make_settings(partitions=1, batch_max=5)
    log = twin(settings)
    tenant = unique("t")
    runs = [str(uuid.uuid4()) for _ in range(40)]
    sent = [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": r}) for r in runs]
    send(log, settings, sent)
    async with running(settings, log) as processor:
        paused_while_backlogged = []
        original = processor.worker.enqueue

        def watching(tp, records):
            original(tp, records)
            paused_while_backlogged.append(tp in processor.consumer.paused())
        processor.worker.enqueue = watching
        await answered(log, settings, sent)
        transactions, paused_at_end = processor.stats["transactions"], processor.consumer.paused()
    assert [e["aggregate_id"] for e in topic(log, settings.events_topic)] == runs
    assert (True in paused_while_backlogged, paused_at_end, transactions >= 8) == (True, set(), True)


@pytest.fixture
def start_run_changes_state_then_rejects():
    original = handlers.HANDLERS[StartRun]

    def start_run(cmd, ctx):
        original[0](cmd, ctx)
        raise InvalidState("rejected after changing state")
    handlers.HANDLERS[StartRun] = (start_run, original[1])
    yield
    handlers.HANDLERS[StartRun] = original


async def test_a_handler_that_changes_state_then_rejects_drops_rebuilds_and_refuses_it_once(
        start_run_changes_state_then_rejects):
    settings = make_settings(partitions=1)
    log = twin(settings)
    tenant = unique("t")
    sent = lifecycle(tenant)
    async with running(settings, log, owning=1) as processor:
        send(log, settings, sent)
        replies = await answered(log, settings, sent)
        rebuilds = processor.stats["rebuilds"]
    codes = [(r[0]["status"], r[0].get("code")) for r in (replies[c["command_id"]] for c in sent)]
    assert codes == [("accepted", None), ("rejected", "undecidable"), ("rejected", "invalid_state")]
    assert (rebuilds, chains_verify(log, settings, [tenant])) == (2, [1])


async def test_timers_are_recovered_by_the_processor_that_takes_over():
    settings = make_settings(partitions=1)
    log, clock = twin(settings), Clock()
    tenant = unique("t")
    run = str(uuid.uuid4())
    sent = [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run}),
            command(tenant, {"type": "StartRun", "run_id": run}),
            command(tenant, {"type": "RequestApproval", "run_id": run, "action": "deploy", "risk_tier": "high",
                             "expires_in_seconds": 60})]
    async with running(settings, log, clock, owning=1):
        send(log, settings, sent)
        await answered(log, settings, sent)
    assert "approval.expired" not in [e["type"] for e in topic(log, settings.events_topic)]
    clock.now += timedelta(seconds=61)
    async with running(settings, log, clock, owning=1):
        expired = await wait_until(lambda: [e for e in topic(log, settings.events_topic)
                                            if e["type"] == "approval.expired"], 10, "approval.expired")
    assert ([e["actor"]["subject"] for e in expired], chains_verify(log, settings, [tenant])) == \
        (["runledger:timer"], [len(topic(log, settings.events_topic))])


async def test_a_fenced_writers_commit_is_refused_nothing_appended_and_the_commands_decided_once():
    settings = make_settings(partitions=1)
    log = twin(settings)
    tenant = unique("t")
    first, second = lifecycle(tenant)[:1], []
    async with running(settings, log, owning=1) as processor:
        processor.fenced_backoff_s = 0.0
        send(log, settings, first)
        await answered(log, settings, first)
        run_id = topic(log, settings.events_topic)[0]["aggregate_id"]
        second = [command(tenant, {"type": "StartRun", "run_id": run_id})]
        usurped = []

        async def usurp_once(transactional_id: str) -> None:
            if not usurped:
                usurped.append(log.transactional_writer(transactional_id))
                await usurped[0].start()  # a newer epoch: this commit must be refused
        log.before_commit = usurp_once
        send(log, settings, second)
        replies = await answered(log, settings, second)
        assert processor.stats["fenced"] == 1
    assert [len(replies[c["command_id"]]) for c in second] == [1]
    assert chains_verify(log, settings, [tenant]) == [2]


async def test_a_member_expelled_mid_batch_loses_its_commit_and_the_new_owner_decides_once():
    settings = make_settings(partitions=1)
    log = twin(settings)
    tenant = unique("t")
    async with running(settings, log, owning=1) as frozen:
        async with running(settings, log) as successor:
            expelled = []

            async def expel_once(transactional_id: str) -> None:
                if not expelled:  # as a SIGSTOPped processor's session expiring mid-transaction
                    expelled.append(True)
                    frozen.consumer.group.expel(frozen.consumer)
                    await log.settled()
                    await wait_until(lambda: 0 in successor.owners, 10, "the successor to own partition 0")
            log.before_commit = expel_once
            sent = lifecycle(tenant)
            send(log, settings, sent)
            replies = await answered(log, settings, sent)
            await wait_until(lambda: frozen.stats["fenced"], 10, "the expelled member's commit to be refused")
            assert ({len(r) for r in replies.values()}, frozen.stats["transactions"], successor.stats["commands"]) == \
                ({1}, 0, 3)
    assert chains_verify(log, settings, [tenant]) == [3]


async def test_an_acquire_that_finishes_between_revoke_and_assign_is_abandoned_not_left_owned_and_paused():
    # Given a processor fencing partition 0 when a rebalance begins: it is told it loses everything,
    # and its acquire finishes before it is given its share (the old assignment still current)
    settings = make_settings(partitions=1)
    log = twin(settings)
    gate, revoked = asyncio.Event(), asyncio.Event()

    async def hold_the_rebalance() -> None:
        revoked.set()
        await gate.wait()
    async with running(settings, log, owning=1) as processor:
        async def rebalance_mid_acquire(_: str) -> None:
            log.before_start = None
            log.between_moves = hold_the_rebalance
            processor.consumer.group.rebalance()
            await revoked.wait()
        log.before_start = rebalance_mid_acquire
        await processor.ownership.release(0)  # take it again, through the hook
        await wait_until(lambda: log.between_moves is not None and revoked.is_set(), 10, "the rebalance to be held")
        gate.set()
        await log.settled()
        # Then it owns the partition once more, flowing, without any healing having been needed
        sent = lifecycle(unique("t"))
        send(log, settings, sent)
        await answered(log, settings, sent)
        assert (processor.stats["healed"], processor.consumer.paused(), sorted(processor.owners)) == (0, set(), [0])
