"""Fail closed on the events topic: a record that can never be applied halts the projector, naming it;
an error that may pass (a database down) is retried from the stored position."""
import json
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from projectors.runner import ProjectorRunner, decoded
from schemas.envelope import GENESIS_HASH, encode
from tests.unit.test_envelope import chain, unsealed

TOPIC = "t.ledger.events"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def record(partition: int, offset: int, value: bytes | None, key: bytes | None = b"acme") -> ConsumerRecord:
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, key, value, None, len(key or b""), len(value or b""), ())


class FakeConsumer:
    def __init__(self):
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict] = []

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def commit(self, offsets: dict) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


class FakeProjection:
    name = "fake"

    def __init__(self):
        self.stored: list[list] = []
        self.failures: list[str] = []
        self.down: Exception | None = None

    async def head(self, tenant_id: str) -> tuple[int, str]:
        return 0, GENESIS_HASH

    async def apply(self, batches: list) -> None:
        if self.down:
            raise self.down
        self.stored.append(batches)

    async def record_failure(self, reason: str | None) -> None:
        self.failures.append(reason)


def runner() -> ProjectorRunner:
    r = ProjectorRunner(SimpleNamespace(topic_prefix="t"), FakeProjection())
    r.consumer, r.retry_delay_s = FakeConsumer(), 0.0
    return r


GOOD = [encode(env) for env in chain(3)]


@pytest.mark.parametrize("value, problem", [
    (b"{not json", "the value is not JSON (Expecting property name"),
    (b"\xff\xfe\x00", "the value is not JSON"),
    (b"[1, 2]", "the value is an array, not an envelope object"),
    (b"null", "the value is null, not an envelope object"),
    (b'"acme"', "the value is a string, not an envelope object"),
    (b"1" + b"0" * 5000, "the value is not JSON (Exceeds the limit"),
    (b"[" * 100_000, "the value is not JSON (maximum recursion depth"),
    (b'{"tenant_id": 7}', "the envelope's tenant_id is 7, not a string"),
    (None, "the record has no value (a tombstone)"),
])
def test_a_value_that_holds_no_envelope_says_what_it_is(value, problem):
    env, why = decoded(value)
    assert (env, why[:len(problem)]) == ({}, problem)


def test_a_good_record_decodes_with_no_problem():
    env, why = decoded(GOOD[0])
    assert (env, why) == (json.loads(GOOD[0]), None)


@pytest.mark.parametrize("garbage, problem", [
    (b"{not json", "the value is not JSON"),
    (b'{"a": 1}', "the envelope's tenant_id is None, not a string"),
    (b"[]", "the value is an array, not an envelope object"),
])
async def test_an_undecodable_record_halts_the_projector_naming_partition_offset_and_key(garbage, problem):
    r = runner()
    poll = {P1: [record(1, 4, GOOD[0])], P0: [record(0, 10, GOOD[1]), record(0, 11, GOOD[2]), record(0, 12, garbage)]}
    await r.guarded(poll)
    expected = f"projector fake stopped: partition 0 offset 12, tenant 'acme' (record key): {problem}"
    assert (r.failed[:len(expected)], r.projection.failures, r.healthy) == (expected, [r.failed], False)
    # Nothing of the poll is stored (the position stays before the bad record) and nothing is committed.
    assert (r.projection.stored, r.consumer.commits, r.applied) == ([], [], 0)


async def test_a_bad_record_without_a_key_is_named_by_partition_and_offset():
    r = runner()
    await r.guarded({P0: [record(0, 3, b"\x00garbage", key=None)]})
    assert r.failed.startswith("projector fake stopped: partition 0 offset 3: the value is not JSON")


@pytest.mark.parametrize("payload, problem", [
    ({"amount": 2**64}, "IntegerDomainError"),
    ({"ratio": float("nan")}, "FloatDomainError"),
])
async def test_a_value_the_hash_rule_cannot_canonicalise_halts_with_chain_position(payload, problem):
    first = chain(1)[0]
    unhashable = {**unsealed(2, first["hash"], **payload), "hash": "0" * 64}
    r = runner()
    await r.guarded({P0: [record(0, 0, encode(first)), record(0, 1, json.dumps(unhashable).encode())]})
    expected = "projector fake stopped: partition 0 offset 1, tenant acme chain_seq 2: the envelope cannot be checked ("
    assert (r.failed[:len(expected)], problem in r.failed, r.projection.stored) == (expected, True, [])


async def test_a_transient_error_is_retried_from_the_stored_position_not_recorded_as_a_failure():
    r = runner()
    r.projection.down = OSError("connection refused")
    poll = {P0: [record(0, 0, GOOD[0])]}
    await r.guarded(poll)
    assert (r.failed, r.projection.failures, r.unpositioned, r.consumer.paused) == (None, [], {P0, P1}, {P0, P1})
    assert r.last_error == "batch on partitions [0] failed: OSError('connection refused')"
    r.projection.down, r.unpositioned = None, set()
    await r.guarded(poll)
    assert (r.failed, r.last_error, r.applied, r.consumer.commits) == (None, None, 1, [{P0: 1}])
