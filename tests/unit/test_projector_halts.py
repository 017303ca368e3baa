"""Fail closed per tenant on the events topic: a record one tenant's chain cannot take holds that tenant,
naming partition, offset and chain_seq, while every other tenant of the same poll and partition is stored;
a record that names no tenant stops the projector; an error of the store is retried for everyone."""
import json
from types import SimpleNamespace

import pytest
from infra.adapters.eventlog import Record, TopicPartition
from infra.adapters.eventlog.memory import MemoryLog

from projectors.admit import decoded
from projectors.base import DATA_ERRORS
from projectors.runner import ProjectorRunner
from schemas.envelope import GENESIS_HASH, encode, seal
from tests.unit.test_envelope import unsealed

TOPIC = "t.ledger.events"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def tenant_chain(tenant: str, n: int, **payload) -> list[dict]:
    envelopes, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        env = seal({**unsealed(seq, prev, note=f"event {seq}", **payload), "tenant_id": tenant})
        envelopes.append(env)
        prev = env["hash"]
    return envelopes


def record(partition: int, offset: int, value: bytes | None, key: bytes | None = b"acme") -> Record:
    return Record(TOPIC, partition, offset, key, value)


def records(partition: int, first_offset: int, envelopes: list[dict]) -> list[Record]:
    return [record(partition, first_offset + i, encode(e), e["tenant_id"].encode()) for i, e in enumerate(envelopes)]


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
        self.commits.append(dict(offsets))


class Refused(ValueError):
    """What a store raises for a row it cannot keep (as PostgreSQL does for NUL in text)."""


class FakeProjection:
    """A store that keeps what it is given and refuses any event whose payload has a 'poison' note."""
    name = "fake"
    genesis = (0, GENESIS_HASH)
    local = False  # a shared store: the runner's group is the one every process joins

    def __init__(self):
        self.stored: list[tuple[int, str, int]] = []  # (partition, tenant, chain_seq)
        self.positions_written: list[dict] = []
        self.held: dict = {}
        self.heads: dict[str, tuple[int, str]] = {}
        self.failures: list[str] = []
        self.down: Exception | None = None
        self.probe_down: Exception | None = None

    async def head(self, tenant_id: str) -> tuple[int, str]:
        return self.heads.get(tenant_id, self.genesis)

    async def holds(self) -> dict:
        return dict(self.held)

    def deterministic(self, error: Exception) -> bool:
        return isinstance(error, DATA_ERRORS)

    def refuse_poison(self, envelopes) -> None:
        for env in envelopes:
            if env["payload"].get("note") == "poison":
                raise Refused(f"cannot store chain_seq {env['chain_seq']} of {env['tenant_id']}")

    async def probe(self, envelopes) -> None:
        if self.probe_down:
            raise self.probe_down
        self.refuse_poison(envelopes)

    async def apply(self, batches, holds=(), released=None) -> None:
        if self.down:
            raise self.down
        self.refuse_poison([e for b in batches for e in b.envelopes])
        self.stored += [(b.partition, e["tenant_id"], e["chain_seq"]) for b in batches for e in b.envelopes]
        self.heads.update({e["tenant_id"]: (e["chain_seq"], e["hash"]) for b in batches for e in b.envelopes})
        self.positions_written.append({b.partition: b.next_offset for b in batches if b.next_offset is not None})
        self.held.update({h.tenant_id: h for h in holds})
        self.held.pop(released, None)

    async def record_failure(self, reason: str | None) -> None:
        self.failures.append(reason)


def runner() -> ProjectorRunner:
    r = ProjectorRunner(SimpleNamespace(topic_prefix="t"), FakeProjection(), log_=MemoryLog([TOPIC], 2))
    r.consumer, r.retry_delay_s = FakeConsumer(), 0.0
    return r


ACME, BETA = tenant_chain("acme", 3), tenant_chain("beta", 3)


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
    env, why = decoded(encode(ACME[0]))
    assert (env, why) == (json.loads(encode(ACME[0])), None)


@pytest.mark.parametrize("garbage, problem", [
    (b"{not json", "the value is not JSON"),
    (b'{"a": 1}', "the envelope's tenant_id is None, not a string"),
    (b"[]", "the value is an array, not an envelope object"),
])
async def test_an_undecodable_record_holds_the_tenant_its_key_names_and_no_other(garbage, problem):
    # Given acme and beta on partition 0 and beta's next events after acme's garbage, in one poll
    r = runner()
    poll = {P0: records(0, 10, ACME[:2]) + [record(0, 12, garbage)] + records(0, 13, BETA)}
    # When the poll is stored
    await r.guarded(poll)
    # Then acme is held at the garbage (chain_seq 3), beta is stored whole, and the projector runs on
    hold = r.projection.held["acme"]
    expected = f"partition 0 offset 12, tenant 'acme' (record key), tenant acme chain_seq 3: {problem}"
    assert (hold.partition, hold.offset, hold.chain_seq, hold.reason[:len(expected)]) == (0, 12, 3, expected)
    assert r.projection.stored == [(0, "acme", 1), (0, "acme", 2), (0, "beta", 1), (0, "beta", 2), (0, "beta", 3)]
    assert (r.failed, r.healthy, r.consumer.commits, r.projection.positions_written) == (None, True, [{P0: 16}], [{0: 16}])


async def test_a_held_tenants_later_events_are_passed_over_and_the_others_carry_on():
    r = runner()
    gap = {**ACME[2], "chain_seq": 5}
    await r.guarded({P0: records(0, 0, ACME[:2]) + [record(0, 2, encode(gap))], P1: records(1, 0, BETA[:1])})
    # A later poll: acme's next event is not even checked, beta's is stored
    await r.guarded({P0: records(0, 3, [ACME[2]]), P1: records(1, 1, BETA[1:])})
    hold = r.projection.held["acme"]
    assert (hold.offset, hold.chain_seq, "gap" in hold.reason or "chain_seq" in hold.reason) == (2, 3, True)
    assert r.projection.stored == [(0, "acme", 1), (0, "acme", 2), (1, "beta", 1), (1, "beta", 2), (1, "beta", 3)]
    assert r.consumer.commits == [{P0: 3, P1: 1}, {P0: 4, P1: 3}]


async def test_a_record_that_names_no_tenant_stops_the_projector_at_it():
    r = runner()
    await r.guarded({P0: [record(0, 3, b"\x00garbage", key=None)]})
    assert r.failed.startswith("projector fake stopped: partition 0 offset 3: the value is not JSON")
    assert "names no tenant" in r.failed
    assert (r.projection.failures, r.projection.stored, r.consumer.commits) == ([r.failed], [], [])


@pytest.mark.parametrize("payload, problem", [
    ({"amount": 2**64}, "IntegerDomainError"),
    ({"ratio": float("nan")}, "FloatDomainError"),
])
async def test_a_value_the_hash_rule_cannot_canonicalise_holds_its_tenant_with_chain_position(payload, problem):
    unhashable = {**unsealed(2, ACME[0]["hash"], **payload), "hash": "0" * 64}
    r = runner()
    await r.guarded({P0: records(0, 0, ACME[:1]) + [record(0, 1, json.dumps(unhashable).encode())]
                     + records(0, 2, BETA[:1])})
    reason = r.projection.held["acme"].reason
    expected = "partition 0 offset 1, tenant acme chain_seq 2: the envelope cannot be checked ("
    assert (reason[:len(expected)], problem in reason) == (expected, True)
    assert r.projection.stored == [(0, "acme", 1), (0, "beta", 1)]


async def test_an_event_the_store_refuses_holds_its_tenant_there_and_the_rest_of_the_poll_is_stored():
    # Given acme's second of three events is one the store cannot keep, beta's events around it are fine
    poisoned = tenant_chain("acme", 3)
    poisoned[1:] = tenant_chain_from(poisoned[0], [{"note": "poison"}, {"note": "event 3"}])
    r = runner()
    poll = {P0: records(0, 0, [poisoned[0], BETA[0], poisoned[1], BETA[1], poisoned[2]]), P1: []}
    await r.guarded(poll)
    hold = r.projection.held["acme"]
    assert (hold.offset, hold.chain_seq, "cannot store this run.started event (Refused" in hold.reason) == (2, 2, True)
    assert r.projection.stored == [(0, "acme", 1), (0, "beta", 1), (0, "beta", 2)]
    assert (r.last_error, r.consumer.commits) == (None, [{P0: 5}])


def tenant_chain_from(first: dict, payloads: list[dict]) -> list[dict]:
    envelopes, prev = [], first["hash"]
    for seq, payload in enumerate(payloads, start=first["chain_seq"] + 1):
        env = seal({**unsealed(seq, prev, **payload), "tenant_id": first["tenant_id"]})
        envelopes.append(env)
        prev = env["hash"]
    return envelopes


async def test_a_transient_error_is_retried_from_the_stored_position_for_everyone_and_holds_no_one():
    r = runner()
    r.projection.down = OSError("connection refused")
    poll = {P0: records(0, 0, ACME[:1])}
    await r.guarded(poll)
    assert (r.failed, r.projection.held, r.unpositioned, r.consumer.paused) == (None, {}, {P0, P1}, {P0, P1})
    assert r.last_error == "batch on partitions [0] failed: OSError('connection refused')"
    r.projection.down, r.unpositioned = None, set()
    await r.guarded(poll)
    assert (r.failed, r.last_error, r.applied, r.consumer.commits) == (None, None, 1, [{P0: 1}])


async def test_a_store_that_fails_while_probing_holds_no_one_and_retries_everyone():
    poisoned = [ACME[0]] + tenant_chain_from(ACME[0], [{"note": "poison"}])
    r = runner()
    r.projection.probe_down = OSError("connection reset")
    await r.guarded({P0: records(0, 0, poisoned + BETA[:1])})
    assert (r.projection.held, r.projection.stored, r.consumer.commits) == ({}, [], [])
    assert r.last_error.startswith("batch on partitions [0] failed: OSError('connection reset')")


async def replay(items):
    for item in items:
        yield item


async def test_a_resumed_tenant_replays_from_its_held_record_and_is_released():
    # Given acme held at chain_seq 2 (a bad record), its later events passed over
    r = runner()
    bad = {**ACME[1], "hash": "f" * 64}
    await r.guarded({P0: records(0, 0, ACME[:1]) + [record(0, 1, encode(bad))] + records(0, 2, BETA[:1])})
    hold = r.projection.held["acme"]
    # When the log (after the fix, read again) holds acme's real events from the held offset on
    fixed = records(0, 1, ACME[1:]) + records(0, 3, BETA[1:2])
    again = await r.admission.resume(hold, replay(fixed))
    # Then acme is stored from chain_seq 2 on, only acme, without moving the partition's position
    assert (again, r.projection.held, r.admission.held) == (None, {}, {})
    assert r.projection.stored == [(0, "acme", 1), (0, "beta", 1), (0, "acme", 2), (0, "acme", 3)]
    assert r.projection.positions_written == [{0: 3}, {}]


async def test_a_resumed_tenant_that_breaks_again_stays_held_with_the_new_reason():
    r = runner()
    poisoned = [ACME[0]] + tenant_chain_from(ACME[0], [{"note": "fine"}, {"note": "poison"}])
    await r.guarded({P0: records(0, 0, poisoned[:1]) + [record(0, 1, b"{oops")]})
    again = await r.admission.resume(r.projection.held["acme"], replay(records(0, 1, poisoned[1:])))
    assert (again.chain_seq, again.offset, "Refused" in again.reason) == (3, 2, True)
    assert r.projection.stored == [(0, "acme", 1), (0, "acme", 2)]
    assert r.projection.held["acme"] == again
