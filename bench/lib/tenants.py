"""Tenant ids spread evenly over the partitions (Kafka's key partitioner), and one probe tenant per partition."""
from __future__ import annotations

import math

from infra.adapters import kafka


def spread_tenants(count: int, partitions: int, stem: str) -> list[str]:
    """`count` tenant ids `<stem>-NNNN`, as evenly spread over the partitions as the partitioner allows."""
    per = math.ceil(count / partitions)
    taken = {p: 0 for p in range(partitions)}
    chosen, i = [], 0
    while len(chosen) < count:
        tenant = f"{stem}-{i:04d}"
        partition = kafka.partition_for(tenant, partitions)
        if taken[partition] < per:
            taken[partition] += 1
            chosen.append(tenant)
        i += 1
    return chosen


def probe_tenants(tenants: list[str], partitions: int) -> list[str]:
    """The first tenant of each partition, in partition order."""
    first: dict[int, str] = {}
    for tenant in tenants:
        first.setdefault(kafka.partition_for(tenant, partitions), tenant)
    return [first[p] for p in sorted(first)]
