"""A transactional offset commit left pending by some other producer does not stall a processor taking its
partitions, on either Kafka client (docs/adr/0013, "Open defect"; infra/adapters/eventlog/confluent_group.py).

librdkafka's consumer, read_committed, asks for stable offsets and waits while any transaction holding offsets
for the partition is open: here one stays open for two minutes under a transactional id no processor fences."""
import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition as KafkaTP

from commands.processor import CommandProcessor
from infra.adapters import kafka
from tests.integration.test_failover import answered, lifecycle, one_tenant_per_partition
from tests.support import make_settings, produce_commands, wait_until


@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
async def test_a_pending_offset_commit_of_another_producer_does_not_stall_a_takeover(client):
    # Given an open transaction of another transactional id holding an offset of command partition 1 for the
    # processors' group (it would stay pending for 120 s)
    settings = make_settings(partitions=2, processor_kafka_client=client)
    await kafka.ensure_topics(settings)
    rogue = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"{settings.topic_prefix}.x",
                             enable_idempotence=True, transaction_timeout_ms=120_000)
    await rogue.start()
    try:
        await rogue.begin_transaction()
        await rogue.send_offsets_to_transaction({KafkaTP(settings.commands_topic, 1): 0}, settings.processor_group)
        # When a processor takes both partitions and is sent a command for each
        processor, stop = CommandProcessor(settings), asyncio.Event()
        task = asyncio.create_task(processor.run(stop))
        try:
            sent = [lifecycle(t)[0] for t in one_tenant_per_partition(2)]
            await produce_commands(settings, sent)
            # Then both are answered, long before the pending transaction would time out
            got = await answered(settings, sent)
            await wait_until(lambda: len(processor.owners) == 2 or task.done(), 30, "both partitions owned")
            assert ([got[c["command_id"]]["status"] for c in sent], sorted(processor.owners)) == \
                (["accepted", "accepted"], [0, 1])
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await rogue.abort_transaction()
        await rogue.stop()
