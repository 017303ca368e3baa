"""The in-memory event log passes the same contract as Kafka (tests/eventlog_contract.py)."""
import itertools

import pytest

from infra.adapters.eventlog.memory import MemoryLog
from tests.eventlog_contract import CASES, Ctx

COUNTER = itertools.count()


@pytest.fixture
def ctx() -> Ctx:
    log = MemoryLog(["t.commands", "t.events", "t.replies"], partitions=3)

    async def produce(topic, key, value, partition=None):
        log.produce(topic, key, value, partition)
    return Ctx(log, "t.commands", "t.events", produce, 3, lambda prefix: f"{prefix}-{next(COUNTER)}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[5:])
async def test_memory_log(ctx, case):
    await case(ctx)
