"""The decide path's cheap forms against the reference forms they stand for (docs/bench.md, "Decide path").

A reply written from pieces (`schemas.sealing.accepted_reply`) encodes to `encode_json`'s bytes for the same
dict; an aggregate created by `domain.events.create` is what the library's `_create` makes; an event put
together by `instantiate` equals the one its class builds, and fails where the class fails; `id_text` is
`str`; the "nothing swept" shortcut of `Families` answers as the full lookup does; CloudEvents headers are
the bytes they were.
"""
import json
import pickle
import random
import uuid
from datetime import datetime, timezone

import pytest
from eventsourcing import domain as library

from domain import events as fast_events
from domain.approval import Approval
from domain.budget import Budget
from domain.context import id_text
from domain.events import create, instantiate
from domain.registry import EVENT_CLASSES
from domain.retention import Families
from domain.run import Run, RunDefaults
from domain.tool_call import ToolCall
from schemas.envelope import Reply, Sealed, cloudevents_headers, encode_json
from schemas.sealing import REPLY_KEYS, accepted_reply
from tests.unit.harness import Harness
from tests.unit.test_encode_seal import corpus
from tests.unit.test_envelope import random_value

AT = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=timezone.utc)


def reference_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_every_reply_of_a_varied_corpus_encodes_as_the_reference_encodes_it():
    h = Harness()
    replies = []
    execute = h.ledger.execute

    def recording(command, now, ring=None):
        reply, envelopes = execute(command, now, ring)
        replies.append(reply)
        return reply, envelopes
    h.ledger.execute = recording
    corpus(h)
    h.send({"type": "StartRun", "run_id": str(uuid.uuid4())})  # a rejection
    assert sum(type(r) is Reply for r in replies) >= 10
    for reply in replies:
        assert encode_json(reply) == reference_json(dict(reply))


def sealed(summary: str | None) -> Sealed:
    env = Sealed({"chain_seq": 1})
    if summary is not None:
        env.summary = summary
    return env


def a_reply(**changes) -> dict:
    reply = {"command_id": "c-1", "tenant_id": "acme", "idempotency_key": None, "request_digest": "d" * 64,
             "status": "accepted", "replayed": False, "aggregate_id": str(uuid.uuid4()), "aggregate_version": 3,
             "events": [{"chain_seq": 1}]}
    reply.update(changes)
    return reply


@pytest.mark.parametrize("changes", [
    {"command_id": "ü \"q\" \u2028 \x01 𝄞"}, {"idempotency_key": "clé\n"}, {"tenant_id": "tenant-é"},
    {"command_id": 7}, {"idempotency_key": 1.5}, {"aggregate_version": True}, {"aggregate_version": 2**64},
    {"replayed": 0}, {"status": "rejected"}, {"decision": {"x": 1}}, {"aggregate_id": None},
])
def test_a_reply_of_odd_fields_encodes_as_the_reference_or_is_left_to_it(changes):
    reply = a_reply(**changes)
    got = accepted_reply(reply, [sealed('{"chain_seq":1}')])
    assert got == reply and encode_json(got) == reference_json(reply)


def test_a_reply_whose_events_were_sealed_by_the_reference_is_left_to_the_encoder():
    reply = a_reply()
    assert type(accepted_reply(reply, [sealed(None)])) is dict
    keys_moved = {k: reply[k] for k in reversed(REPLY_KEYS)}
    assert type(accepted_reply(keys_moved, [sealed('{"chain_seq":1}')])) is dict


def test_random_replies_encode_as_the_reference():
    rng = random.Random(14)
    for _ in range(2000):
        reply = a_reply(**{k: random_value(rng, 2) for k in rng.sample(REPLY_KEYS[:8], rng.randint(1, 3))})
        got = accepted_reply(reply, [sealed('{"chain_seq":1}')])
        try:
            expected = reference_json(reply)
        except (TypeError, ValueError) as error:
            with pytest.raises(type(error)):
                encode_json(got)
            continue
        assert encode_json(got) == expected


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(library, "datetime_now_with_tzinfo", lambda: AT)


CREATIONS = [
    (Run, Run.Requested, {"agent_id": "a", "project": "p", "budget_micros": None, "labels": {"k": "v"},
                          "deadline_at": None}),
    (Budget, Budget.Opened, {"project": "ops"}),
    (RunDefaults, RunDefaults.Opened, {}),
    (Approval, Approval.Requested, {"run_id": "r", "tool_call_id": None, "action": "deploy", "risk_tier": "high",
                                    "required_role": "approver", "required_approvals": 2, "requested_by": "ann",
                                    "expires_at": "2026-12-02T10:00:00.000000Z"}),
]


@pytest.mark.parametrize("cls,event_class,kwargs", CREATIONS)
def test_an_aggregate_is_created_as_the_library_creates_it(frozen_clock, cls, event_class, kwargs):
    aggregate_id = uuid.uuid4()
    fast = create(cls, event_class, id=aggregate_id, **kwargs)
    slow = cls._create(event_class, id=aggregate_id, **kwargs)
    assert type(fast) is type(slow) is cls and vars(fast) == vars(slow)
    assert fast.pending_events == slow.pending_events and vars(fast.pending_events[0]) == vars(slow.pending_events[0])
    assert fast_events._CREATIONS[(cls, event_class)] is not None  # the cheap path was the one taken


def test_a_tool_call_is_created_as_the_library_creates_it(frozen_clock):
    call_kwargs = {name: None for name in fast_events._plan_creation(ToolCall, ToolCall.Requested).names}
    call_id = uuid.uuid4()
    assert vars(create(ToolCall, ToolCall.Requested, id=call_id, **call_kwargs)) == \
        vars(ToolCall._create(ToolCall.Requested, id=call_id, **call_kwargs))


@pytest.mark.parametrize("given", [
    {"id": "not-a-uuid"},  # a str id: the library's path (the event refuses it)
    {"id": None},  # no id and no create_id
    {"id": uuid.UUID(int=1), "agent_id": "a"},  # arguments missing
    {"id": uuid.UUID(int=1), "agent_id": "a", "project": "p", "budget_micros": None, "labels": {},
     "deadline_at": None, "extra": 1},
])
def test_a_creation_that_does_not_fit_fails_as_the_library_fails(given):
    with pytest.raises(Exception) as slow:
        Run._create(Run.Requested, **given)
    with pytest.raises(type(slow.value)) as fast:
        create(Run, Run.Requested, **given)
    assert str(fast.value) == str(slow.value)


@pytest.mark.parametrize("event_type", sorted(EVENT_CLASSES))
def test_every_event_class_is_instantiated_as_it_instantiates_itself(event_type):
    event_class = EVENT_CLASSES[event_type]
    names = [name for name in event_class.__dataclass_fields__]
    state = {name: f"value-{i}" for i, name in enumerate(names)}
    state.update(originator_id=uuid.uuid4(), originator_version=2, timestamp=AT)
    built, reference = instantiate(event_class, state), event_class(**state)
    assert type(built) is event_class and built == reference and vars(built) == vars(reference)
    assert fast_events._FIELD_COUNTS[event_class] == len(names)
    with pytest.raises(TypeError) as slow:
        event_class(**{**state, "originator_id": str(state["originator_id"])})
    with pytest.raises(TypeError) as fast:
        instantiate(event_class, {**state, "originator_id": str(state["originator_id"])})
    assert str(fast.value) == str(slow.value)
    with pytest.raises(TypeError):
        instantiate(event_class, {**state, "unknown": 1})


def test_id_text_is_str():
    for value in [uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()]:
        assert id_text(value) == str(value) and id_text(uuid.UUID(str(value))) == str(value)
    assert id_text("already text") == "already text"


def swept_envelope(run_id: str) -> dict:
    return {"type": "retention.swept", "actor": {"subject": "ops"}, "chain_seq": 9,
            "payload": {"run_ids": [run_id], "record_class": "audit"}}


def run_envelope(run_id: str) -> dict:
    return {"type": "run.requested", "aggregate_type": "run", "aggregate_id": run_id, "payload": {},
            "recorded_at": "2026-12-02T10:00:00.000000Z", "actor": {"subject": "ann"}}


def test_the_nothing_swept_shortcut_answers_as_the_lookup():
    families = Families()
    families.track(run_envelope("r1"))
    assert families.nothing_swept and families.swept_family_of("r1") is None
    families.track(swept_envelope("r1"))
    assert not families.nothing_swept and families.swept_family_of("r1").run_id == "r1"
    copied = pickle.loads(pickle.dumps(families))
    assert not copied.nothing_swept and copied.swept_family_of("r1").run_id == "r1"
    rebuilt = Families(runs=families.runs, owner=families.owner)  # built with a swept family in it
    assert not rebuilt.nothing_swept and rebuilt.swept_family_of("r1").run_id == "r1"
    state_without_flag = {k: v for k, v in vars(families).items() if k != "nothing_swept"}
    old = Families.__new__(Families)
    old.__dict__.update(state_without_flag)  # an object restored without the attribute is not presumed unswept
    assert old.swept_family_of("r1").run_id == "r1"


@pytest.mark.parametrize("tenant,event_type", [("acme", "run.started"), ("tenant-é", "run.requested"), (7, 8)])
def test_cloudevents_headers_are_the_bytes_they_were(tenant, event_type):
    env = {"event_id": "e", "tenant_id": tenant, "type": event_type, "recorded_at": "t", "aggregate_type": "run",
           "aggregate_id": "a", "traceparent": None}
    headers = dict(cloudevents_headers(env))
    assert headers["ce_source"] == f"/runledger/tenants/{tenant}".encode()
    assert headers["ce_type"] == f"dev.runledger.{event_type}".encode()
