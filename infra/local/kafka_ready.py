"""Readiness probe for the local Kafka broker, used by infra/local/stack.sh.

Exit 0 when the broker at BOOTSTRAP answers a real Metadata request (DescribeCluster)
naming at least one broker (with --brokers N, at least N: infra/local/cluster.sh) and a
controller. With --warm-transactions it also proves the two coordinators work: a
transactional producer's InitProducerId (transaction coordinator, creating
__transaction_state on first use) and an OffsetFetch for a consumer group (group
coordinator, creating __consumer_offsets). Doing that once at `up` keeps the first
test from paying for those internal topics.

Exit 1 (with the reason on stderr) on the first failure; the caller retries until its
deadline. Needs only aiokafka.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def probe(bootstrap: str, warm: bool, timeout_ms: int, want_brokers: int = 1) -> str:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        brokers = cluster.get("brokers") or []
        if len(brokers) < want_brokers:
            raise RuntimeError(f"metadata lists {len(brokers)} brokers, not {want_brokers}: {cluster!r}")
        if cluster.get("controller_id", -1) in (None, -1):
            raise RuntimeError(f"metadata names no controller: {cluster!r}")
        summary = f"cluster {cluster.get('cluster_id')} brokers={len(brokers)} controller={cluster['controller_id']}"
        if warm:
            await admin.list_consumer_group_offsets("runledger-stack-readiness")
    finally:
        await admin.close()

    if warm:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id="runledger-stack-readiness",
            request_timeout_ms=timeout_ms,
        )
        await producer.start()  # InitProducerId via the transaction coordinator
        await producer.stop()
        summary += ", transaction and group coordinators ready"
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("--warm-transactions", action="store_true")
    parser.add_argument("--brokers", type=int, default=1, help="how many brokers the metadata must list")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds for this attempt")
    args = parser.parse_args()
    try:
        summary = asyncio.run(
            asyncio.wait_for(
                probe(args.bootstrap, args.warm_transactions, int(args.timeout * 1000), args.brokers),
                args.timeout,
            )
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
