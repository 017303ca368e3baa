"""Kafka adapter pieces shared by the API, the processor and the CLI (aiokafka)."""
import json
from typing import Any, AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from infra.adapters.settings import Settings


def partition_for(tenant_id: str, partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for a tenant key."""
    return (murmur2(tenant_id.encode()) & 0x7FFFFFFF) % partitions


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def ensure_topics(settings: Settings) -> None:
    """Create the ledger topics if they do not exist (same partition count, unlimited retention, the
    replication factor and min.insync.replicas of the settings; topics that exist are left as they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await admin.start()  # inside: a broker that is down leaves no connection open behind (roles retry)
        existing = set(await admin.list_topics())
        config = {"retention.ms": "-1", "retention.bytes": "-1",
                  "min.insync.replicas": str(settings.min_insync_replicas)}
        wanted = [NewTopic(t, settings.partitions, settings.replication_factor, topic_configs=config)
                  for t in (settings.commands_topic, settings.events_topic, settings.replies_topic)
                  if t not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def broker_config_max(settings: Settings, name: str) -> int | None:
    """The highest value of an integer broker setting across the cluster; None if it cannot be read now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await admin.start()
        brokers = [ConfigResource(ConfigResourceType.BROKER, str(b["node_id"]), {name: None})
                   for b in (await admin.describe_cluster())["brokers"]]
        return max(int(entry[1]) for response in await admin.describe_configs(brokers)
                   for resource in response.resources for entry in resource[4] if entry[0] == name)
    except (KafkaError, ValueError, KeyError, IndexError):
        return None
    finally:
        await admin.close()


def transactional_producer(settings: Settings, partition: int) -> AIOKafkaProducer:
    """The producer the processor's writer of `partition` uses (tests use it to fence that writer)."""
    return transactional_producer_for(settings, settings.transactional_id(partition))


def transactional_producer_for(settings: Settings, transactional_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=transactional_id,
                            enable_idempotence=True, acks="all", linger_ms=0,
                            max_batch_size=1024 * 1024, transaction_timeout_ms=30000)


def command_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                            enable_idempotence=True, acks="all", linger_ms=0)


def reader(settings: Settings, **kwargs: Any) -> AIOKafkaConsumer:
    """A group-less read_committed consumer for reading partitions by hand."""
    return AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                            enable_auto_commit=False, isolation_level="read_committed",
                            auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
                            fetch_max_bytes=32 * 1024 * 1024, **kwargs)


async def partitions_of(settings: Settings, topic: str) -> set[int]:
    """Return the topic's partitions, or an empty set if it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"] for d in described if d["error_code"] == 0 for p in d["partitions"]}


async def read_partition(consumer: AIOKafkaConsumer, tp: TopicPartition,
                         start: int = 0, end: int | None = None) -> AsyncIterator[Any]:
    """Yield the committed records of one assigned partition from start up to end (default: its current end)."""
    if end is None:
        end = (await consumer.end_offsets([tp]))[tp]
    if end <= start:
        return
    consumer.seek(tp, start)
    while True:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
        for record in batch.get(tp, []):
            if record.offset >= end:
                return
            yield record
        if await consumer.position(tp) >= end:
            return
