"""What a test reads of a three-broker cluster (bench/lib/cluster.py runs one): who leads each partition and who
is in sync, from the cluster's metadata, and a topic's configuration.
"""
import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

# Besides the ledger's topics: a broker that is not back in these either is not a broker to fail over to yet.
INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")


async def describe(bootstrap: str, topic: str, give_up_s: float = 30) -> dict[int, dict]:
    """Per partition of the topic: its leader, replicas and in-sync replicas, as the metadata says now (asked
    again, of another broker, while the one asked is not there: a node may just have been stopped)."""
    deadline = time.monotonic() + give_up_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            [described] = await admin.describe_topics([topic])
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await asyncio.gather(admin.close(), return_exceptions=True)
    return {p["partition"]: {"leader": p["leader"], "replicas": sorted(p["replicas"]), "isr": sorted(p["isr"])}
            for p in described["partitions"]}


async def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    return {p: d["leader"] for p, d in (await describe(bootstrap, topic)).items()}


async def out_of_sync(bootstrap: str, topics: list[str], replicas: int = 3) -> list[tuple[str, int, list[int]]]:
    """(topic, partition, in-sync replicas) of every partition of the topics with fewer than `replicas` in sync."""
    return [(topic, p, d["isr"]) for topic in topics for p, d in (await describe(bootstrap, topic)).items()
            if len(d["isr"]) < replicas]


def busiest(leading: dict[int, int], besides: tuple[int, ...] = ()) -> int:
    """The broker that leads the most partitions (of those not in `besides`; ties: the lowest id)."""
    counts = {n: sum(1 for leader in leading.values() if leader == n) for n in (1, 2, 3) if n not in besides}
    return max(sorted(counts), key=lambda n: counts[n])


async def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    """One configuration value of a topic, as the brokers report it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
    finally:
        await admin.close()
    return next((entry[1] for r in responses for resource in r.resources for entry in resource[4]
                 if entry[0] == name), None)
