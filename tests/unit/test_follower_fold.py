"""The follower fold on the in-memory event log: a processor that does not own a partition keeps folding it,
and when it takes the partition over it replays only what is newer than its fold, which is exactly what a
replay from offset 0 folds (commands/following.py, docs/adr/0015)."""
import logging
from types import SimpleNamespace

from infra.adapters.eventlog import TopicPartition
from tests.support import make_settings, unique, wait_until
from tests.unit.test_processor_on_twin import answered, chains_verify, lifecycle, running, send, twin
from tests.unit.test_snapshot_takeover import fold, rebuilt


def caught_up(processor, log, settings, partition: int = 0) -> bool:
    """The processor's follower has folded every committed event and reply of the partition."""
    followed = processor.ownership.follower.followed.get(partition)
    ends = [next_offset(log.visible(TopicPartition(t, partition), 0)) for t in (settings.events_topic,
                                                                                 settings.replies_topic)]
    return followed is not None and followed.caught_up and [followed.events_from, followed.replies_from] == ends


def next_offset(records) -> int:
    return records[-1].offset + 1 if records else 0


async def test_a_takeover_by_a_follower_replays_only_what_is_newer_and_folds_what_a_replay_from_0_folds(caplog):
    # Given A owning the partition, B following it, B's fold caught up with 6 commands, then 6 more B has not read
    settings = make_settings(partitions=1)
    log = twin(settings)
    tenants = [unique("t"), unique("t")]
    first, later, after = ([c for t in tenants for c in lifecycle(t)] for _ in range(3))
    caplog.set_level(logging.INFO, "runledger.processor")
    leaving = running(settings, log, owning=1)
    await leaving.__aenter__()
    try:
        async with running(settings, log) as b:
            send(log, settings, first)
            await answered(log, settings, first)
            await wait_until(lambda: caught_up(b, log, settings), 10, "B's follower to catch up")
            follower = b.ownership.follower
            follower.interval_s, rounds = 3600.0, follower.stats["rounds"]
            await wait_until(lambda: follower.stats["rounds"] > rounds, 10, "a round, after which the next is far off")
            send(log, settings, later)
            await answered(log, settings, later)
            # When A stops and B takes the partition over
            await leaving.__aexit__(None, None, None)
            leaving = None
            await wait_until(lambda: 0 in b.owners, 10, "B to own partition 0")
            owner = b.owners[0]
            # Then B's fold was the follower's: 6 events folded beforehand, 6 read at the takeover
            owning = [r for r in caplog.records if getattr(r, "owning", None) == 0]  # A's first, then B's
            assert (owner.followed, owning[-1].tail, owning[-1].from_follower) == (6, 6, True)
            assert fold(owner) == fold((await rebuilt(settings, log, None))[0])  # the same fold, field by field
            # And the chains go on from it
            send(log, settings, after)
            replies = await answered(log, settings, after)
    finally:
        if leaving is not None:
            await leaving.__aexit__(None, None, None)
    assert {r[0]["status"] for r in replies.values()} == {"accepted"}
    assert chains_verify(log, settings, tenants) == [9, 9]


async def test_a_member_owning_every_partition_follows_none():
    settings = make_settings(partitions=2)
    log = twin(settings)
    async with running(settings, log, owning=2) as processor:
        sent = lifecycle(unique("t"))
        send(log, settings, sent)
        await answered(log, settings, sent)
        follower = processor.ownership.follower
        rounds = follower.stats["rounds"]
        await wait_until(lambda: follower.stats["rounds"] >= rounds + 2, 10, "two more rounds")
        assert follower.followed == {}


async def test_an_aborted_transaction_is_never_folded_by_the_follower():
    # Given A's second transaction refused (a newer writer fenced it) while B follows: its records are aborted
    settings = make_settings(partitions=1)
    log = twin(settings)
    tenant = unique("t")
    sent = lifecycle(tenant)
    async with running(settings, log, owning=1) as a:
        async with running(settings, log) as b:
            a.fenced_backoff_s = 0.0
            usurped = []

            async def usurp_once(transactional_id: str) -> None:
                if not usurped:
                    usurped.append(log.transactional_writer(transactional_id))
                    await usurped[0].start()
            log.before_commit = usurp_once
            send(log, settings, sent)
            await answered(log, settings, sent)
            await wait_until(lambda: a.stats["fenced"] == 1 and caught_up(b, log, settings), 10, "B to catch up")
            followed = b.ownership.follower.followed[0]
            # Then B's fold holds each command once, as a replay from offset 0 does
            from_zero = (await rebuilt(settings, log, None))[0]
            assert fold(SimpleNamespace(tenants=followed.tenants)) == fold(from_zero)
            assert followed.tenants[tenant].chain.head_seq == 3
