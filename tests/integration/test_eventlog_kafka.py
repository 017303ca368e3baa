"""The Kafka adapters of the event log (aiokafka; confluent-kafka, the processor's) pass the shared contract
(tests/eventlog_contract.py) on a real broker."""
import pytest
from aiokafka import AIOKafkaProducer

from infra.adapters import kafka
from infra.adapters.eventlog.confluent import ConfluentLog
from infra.adapters.eventlog.kafka import KafkaLog
from tests.eventlog_contract import CASES, Ctx
from tests.support import make_settings, unique


@pytest.mark.parametrize("adapter", [KafkaLog, ConfluentLog], ids=["aiokafka", "confluent"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[5:])
async def test_kafka_log(case, adapter):
    settings = make_settings(partitions=3)
    await kafka.ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()

    async def produce(topic, key, value, partition=None):
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    try:
        await case(Ctx(adapter(settings), settings.commands_topic, settings.events_topic, produce, 3, unique))
    finally:
        await producer.stop()
