"""No self-exits, on the real broker: a partition lost between a poll and its hand-off, a coordinator that
moves, a fenced writer whose close fails too, a partition revoked while its batch commits: each is handled
inside the processor, which never ends by itself and answers every command exactly once."""
import asyncio
from contextlib import asynccontextmanager

from commands.processor import CommandProcessor
from infra.adapters import kafka
from infra.adapters.eventlog import LogError, NotAssigned
from infra.adapters.eventlog.kafka import KafkaLog
from schemas.chain import ChainVerdict, verify_chain
from tests.integration.test_failover import answered, lifecycle
from tests.support import events, make_settings, produce_commands, unique, wait_until


class Faults:
    """Faults armed by the test: each entry raises once from the named client call, then is gone."""

    def __init__(self):
        self.armed: dict[str, list[Exception]] = {}

    def arm(self, call: str, *errors: Exception) -> None:
        self.armed.setdefault(call, []).extend(errors)

    def strike(self, call: str) -> None:
        if self.armed.get(call):
            raise self.armed[call].pop(0)


class Faulty:
    """A client proxy that consults the faults before each call it names."""

    def __init__(self, inner, faults: Faults, prefix: str):
        self.inner, self.faults, self.prefix = inner, faults, prefix

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr
        if asyncio.iscoroutinefunction(attr):
            async def call(*a, **kw):
                if name == "stop":  # a close that fails does close what it can first
                    await attr(*a, **kw)
                    return self.faults.strike(f"{self.prefix}.{name}")
                self.faults.strike(f"{self.prefix}.{name}")
                return await attr(*a, **kw)
            return call

        def sync(*a, **kw):
            self.faults.strike(f"{self.prefix}.{name}")
            return attr(*a, **kw)
        return sync


class FaultyLog(KafkaLog):
    def __init__(self, settings, faults: Faults):
        super().__init__(settings)
        self.faults = faults

    def group_consumer(self, *args, **kwargs):
        return Faulty(super().group_consumer(*args, **kwargs), self.faults, "consumer")

    def transactional_writer(self, transactional_id: str):
        return Faulty(super().transactional_writer(transactional_id), self.faults, "writer")


@asynccontextmanager
async def processing(settings, faults: Faults, owning: int):
    processor, stop = CommandProcessor(settings, log_=FaultyLog(settings, faults)), asyncio.Event()
    processor.fenced_backoff_s = 0.2
    task = asyncio.create_task(processor.run(stop))
    await wait_until(lambda: len(processor.owners) == owning or task.done(), 90, f"owning {owning}")
    try:
        yield processor, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def once_each_and_chained(settings, sent: list[dict], tenants: list[str]) -> list[int]:
    got = await answered(settings, sent)
    assert {got[c["command_id"]]["status"] for c in sent} == {"accepted"}
    logged = await events(settings)
    lengths = []
    for tenant in tenants:
        chain = [e for e in logged if e["tenant_id"] == tenant]
        assert verify_chain(tenant, chain) == ChainVerdict(True, len(chain), chain[-1]["hash"])
        lengths.append(len(chain))
    return lengths


async def test_a_partition_lost_between_poll_and_hand_off_and_a_moving_coordinator_never_end_the_processor():
    settings = make_settings(partitions=1, batch_max=2)
    faults = Faults()
    async with processing(settings, faults, owning=1) as (processor, task):
        # the assignment vanishes as a full backlog is paused (aiokafka: IllegalStateError, "No current
        # assignment for partition"), and the coordinator moves under the next polls and offset reads
        faults.arm("consumer.pause", NotAssigned("No current assignment for partition"))
        faults.arm("consumer.getmany", LogError("NotCoordinatorForGroupError"), LogError("CoordinatorNotAvailable"))
        tenants = [unique("t") for _ in range(3)]
        sent = [c for t in tenants for c in lifecycle(t)]
        await produce_commands(settings, sent)
        assert await once_each_and_chained(settings, sent, tenants) == [2, 2, 2]
        assert (task.done(), faults.armed["consumer.pause"], faults.armed["consumer.getmany"]) == (False, [], [])
        assert processor.stats["stumbled"] >= 1


async def test_a_fenced_writer_whose_close_fails_too_is_dropped_and_the_partition_taken_again():
    settings = make_settings(partitions=1)
    faults = Faults()
    async with processing(settings, faults, owning=1) as (processor, task):
        rival = kafka.transactional_producer(settings, 0)
        await rival.start()  # a writer of the same transactional id: the processor's is fenced
        faults.arm("writer.stop", RuntimeError("the fenced producer would not close"))
        tenant = unique("t")
        sent = lifecycle(tenant)
        await produce_commands(settings, sent)
        assert await once_each_and_chained(settings, sent, [tenant]) == [2]
        await rival.stop()
        # Dropped and taken again: aiokafka surfaces the fence as ProducerFenced or, when it lands between two
        # transactions, as IllegalOperation on the next send; either way the writer is closed and the partition rebuilt
        assert (task.done(), processor.stats["rebuilds"] >= 2, faults.armed["writer.stop"]) == (False, True, [])


async def test_partitions_revoked_while_batches_commit_never_end_either_processor():
    settings = make_settings(partitions=2, batch_max=5)
    tenants = [unique("t") for _ in range(6)]
    async with processing(settings, Faults(), owning=2) as (first, first_task):
        sent = [c for t in tenants for c in lifecycle(t)]
        await produce_commands(settings, sent[:4])
        for turn in range(2):  # a second member joins and leaves while commands are being decided
            async with processing(settings, Faults(), owning=1) as (_, second_task):
                await produce_commands(settings, sent[4 + 4 * turn:8 + 4 * turn])
                await answered(settings, sent[:8 + 4 * turn])
                assert second_task.done() is False
        assert await once_each_and_chained(settings, sent, tenants) == [2] * 6
        await wait_until(lambda: len(first.owners) == 2, 90, "the first to own both again")
        assert first_task.done() is False
