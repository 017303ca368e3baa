"""The decide path's third round of cheap forms against the references they stand for (docs/bench.md, "Decide path").

A new event is folded into the tenant's indexes from its pieces (`domain.appending.fold`) as `TenantLedger.track`
folds its envelope; an event class's name, version and payload are looked up once (`appending.plan`, `payload`)
as `registry` gives them; `Stamp.of_command` is `Stamp(tenant, stamp_of(...))`; `accepted` is `accepted_reply`
of the reply dict; the envelope `seal_event` copies from its stamp's layout has the reference's keys in the
reference's order; `instant` with its per-second text is `strftime`; `made_id` is `UUID`; `collect_pairs` is
`collect_events` with each event's aggregate; `bears_on_policy` says whether `policy_outcome` says anything.
"""
import copy
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain import appending
from domain.appending import FULL, fold, payload, plan, tracking
from domain.context import Context, id_text, made_id
from domain.ledger import TenantLedger, stamp_of
from domain.policy_reply import POLICY_TYPES, bears_on_policy, policy_outcome
from domain.registry import AGGREGATES, EVENT_CLASSES, payload_of, schema_version_of
from domain.retention import Families, Family
from schemas.envelope import Actor, encode_json, instant, needs_full_jcs, seal
from schemas.sealing import Stamp, _plain, accepted, accepted_reply
from tests.unit.harness import Harness
from tests.unit.test_encode_seal import body_of, corpus, random_text
from tests.unit.test_envelope import random_value

AT = "2026-12-02T10:00:00.000001Z"


def indexes(ledger: TenantLedger) -> tuple:
    """Everything `track` folds, comparable."""
    families = ledger.families
    return (ledger.expiries, ledger.step_runs, ledger.checkpoint_seq, ledger.tree, ledger.calls.times,
            ledger.calls.keys, families.runs, families.owner, families.actors, families.nothing_swept,
            ledger.chain.head_seq, ledger.chain.head_hash)


def test_the_indexes_a_ledger_decides_are_the_indexes_its_log_replays_to():
    h = Harness()
    corpus(h)
    h.ok({"type": "SetRetentionPolicy", "record_class": "operational", "days": 1}, {"subject": "root", "roles": ["admin"]})
    replayed = TenantLedger("acme")
    for env in h.log:
        replayed.apply(env)
    assert len({env["type"] for env in h.log}) >= 15
    assert indexes(h.ledger) == indexes(replayed)


def synthetic_envelope(event_type: str, seq: int, rng: random.Random) -> dict:
    """An envelope of the type with every payload field given (text, ids, a run id the families know or not)."""
    cls = EVENT_CLASSES[event_type]
    payload = {f.name: rng.choice(["r-1", "r-2", None, "x"]) if f.name == "run_id" else f"{f.name}-{seq}"
               for f in appending.payload_fields(cls)}
    aggregate_type = event_type.split(".")[0]
    return {"event_id": f"e-{seq}", "tenant_id": "acme", "chain_seq": seq, "prev_hash": "0" * 64, "type": event_type,
            "schema_version": 1, "aggregate_type": aggregate_type, "aggregate_id": rng.choice(["r-1", "r-2", "a-3"]),
            "aggregate_version": 1, "occurred_at": AT, "recorded_at": rng.choice([AT, "2026-12-02T09:00:00.000000Z",
                                                                                   "2026-12-02T11:00:00.000000Z"]),
            "actor": {"subject": rng.choice(["ann", "bob"]), "roles": ["operator"]}, "command_id": "c",
            "causation_id": "c", "correlation_id": "c", "traceparent": None, "payload": payload,
            "hash": f"{seq:064x}"}


def test_every_event_type_folded_from_its_pieces_is_folded_as_track_folds_it():
    folded = [t for t in EVENT_CLASSES if tracking(t, t.split(".")[0]) != FULL]
    assert {"run.requested", "run.started", "budget.cost_recorded", "budget.opened"} <= set(folded)
    rng = random.Random(3)
    for event_type in folded:  # the others are `track` itself (below)
        fast, reference = TenantLedger("acme"), TenantLedger("acme")
        for ledger in (fast, reference):  # a family already known, so both first and later events are folded
            ledger.families.runs["r-1"] = Family("r-1", AT, AT)
        for seq in range(1, 6):
            env = synthetic_envelope(event_type, seq, rng)
            reference.track(copy.deepcopy(env))
            fold(fast, env, tracking(event_type, env["aggregate_type"]), env["aggregate_id"], env["payload"],
                 env["recorded_at"], env["actor"]["subject"])
        assert indexes(fast) == indexes(reference), event_type
    tracked = []
    ledger = TenantLedger("acme")
    ledger.track = tracked.append
    for event_type in sorted(set(EVENT_CLASSES) - set(folded)):
        env = synthetic_envelope(event_type, 1, rng)
        fold(ledger, env, FULL, env["aggregate_id"], env["payload"], AT, "ann")
        assert tracked.pop() is env
    assert ledger.tree.size == 0


@pytest.mark.parametrize("event_type", sorted(EVENT_CLASSES))
def test_an_event_class_plan_is_what_the_registry_says(event_type):
    cls = EVENT_CLASSES[event_type]
    aggregate_type, aggregate = next((name, agg) for name, agg in AGGREGATES.items()
                                     if event_type.startswith(name + "."))
    p = plan(cls, aggregate)
    assert (p.event_type, p.schema_version, p.aggregate_type) == (event_type, schema_version_of(cls), aggregate_type)
    names = [f.name for f in appending.payload_fields(cls)]
    event = cls(originator_id=uuid.uuid4(), originator_version=2, timestamp=datetime.now(timezone.utc),
                **{name: f"v-{i}" for i, name in enumerate(names)},
                **({"originator_topic": "t"} if "originator_topic" in cls.__dataclass_fields__ else {}))
    got = payload(event, p)
    assert got == payload_of(event) and list(got) == list(payload_of(event))


def odd_command(rng: random.Random) -> dict:
    def odd(usual):
        return rng.choice([usual] * 6 + [None, "", 7, True, random_text(rng), ["x"]])
    command = {"command_id": odd(str(uuid.uuid4())), "tenant_id": "acme", "request_digest": "d" * 64, "body": {}}
    for name in ("causation_id", "correlation_id", "traceparent", "idempotency_key", "occurred_at"):
        if rng.random() < 0.6:
            command[name] = odd(f"{name}-{rng.randint(0, 9)}é" if rng.random() < 0.2 else f"{name}-1")
    if rng.random() < 0.2:
        command["causation_id"] = command["command_id"]
    return command


def stamp_state(stamp: Stamp) -> tuple:
    pieces = ("head", "causation", "command", "occurred_key", "occurred", "tail", "layout")
    return (stamp.tenant_id, stamp.fields, list(stamp.fields),
            None if stamp.head is None else tuple(getattr(stamp, name) for name in pieces))


def test_a_stamp_of_a_command_is_the_stamp_of_its_fields():
    rng = random.Random(5)
    fast_forms = 0
    for _ in range(3000):
        command = odd_command(rng)
        actor = Actor(subject=rng.choice(["ann", "é \"q\"", "agent:x"]), roles=rng.choice([["operator"], [], ["a", "b"]]))
        tenant = rng.choice(["acme", "tenant-é"])
        try:
            reference = Stamp(tenant, stamp_of(command, actor, AT))
        except Exception as error:  # noqa: BLE001 - the same failure, or none
            with pytest.raises(type(error)):
                Stamp.of_command(tenant, command, actor.subject, actor.roles, AT)
            continue
        fast = Stamp.of_command(tenant, command, actor.subject, actor.roles, AT)
        assert stamp_state(fast) == stamp_state(reference)
        fast_forms += getattr(fast, "command_text", None) is not None
    assert fast_forms > 500


def test_an_accepted_reply_is_accepted_reply_of_the_reply_dict():
    h = Harness()
    replies = []
    execute = h.ledger.execute

    def recording(command, now, ring=None):
        reply, envelopes = execute(command, now, ring)
        replies.append((command, reply, envelopes))
        return reply, envelopes
    h.ledger.execute = recording
    corpus(h)
    rng = random.Random(9)
    checked = 0
    for command, reply, envelopes in replies:
        if reply["status"] != "accepted" or bears_on_policy(envelopes):
            continue
        for _ in range(20):
            fields = [command["command_id"], "acme", command.get("idempotency_key"), command["request_digest"],
                      reply["aggregate_id"], reply["aggregate_version"]]
            i = rng.randrange(len(fields) + 2)
            if i < len(fields):
                fields[i] = rng.choice([random_text(rng), None, 7, 1.5, True, 2**64, "ü \"q\" \u2028"])
            events = [{"chain_seq": e["chain_seq"]} for e in envelopes]
            reference = accepted_reply(h.ledger.reply(command | {"command_id": fields[0], "idempotency_key": fields[2],
                                                                 "request_digest": fields[3]},
                                                      "accepted", aggregate_id=fields[4], aggregate_version=fields[5],
                                                      events=events) | {"tenant_id": fields[1]}, envelopes)
            got = accepted(*fields, events, envelopes)
            assert (type(got), got, list(got)) == (type(reference), reference, list(reference))
            assert encode_json(got) == encode_json(reference)
            checked += 1
    assert checked > 100


def test_an_envelope_has_the_keys_of_the_reference_in_its_order():
    h = Harness()
    corpus(h)
    h.send({"type": "StartRun", "run_id": str(uuid.uuid4())}, key="k")
    ledger = h.ledger
    command = {"command_id": "c", "tenant_id": "acme", "request_digest": "d", "occurred_at": "2026-11-22T11:59:00.5Z",
               "actor": {"subject": "s", "roles": ["admin"]}, "body": {"type": "SetRunDeadline", "deadline_s": 60}}
    reply, envelopes = ledger.execute(command, h.now)
    assert reply["status"] == "accepted"
    for env in h.log + envelopes:
        assert list(env) == list(seal(body_of(env))) and env == seal(body_of(env))
    assert envelopes[0]["occurred_at"] == command["occurred_at"]  # the client's time, as the reference puts it


def test_an_instant_with_its_remembered_second_is_strftime():
    rng = random.Random(11)
    base = datetime(2026, 12, 2, 23, 59, 58, tzinfo=timezone.utc)
    for _ in range(5000):
        at = base + timedelta(microseconds=rng.randrange(3_000_000)) if rng.random() < 0.8 else \
            datetime(rng.randrange(1, 10000), rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
                     rng.randrange(60), rng.randrange(60), rng.randrange(1_000_000), tzinfo=timezone.utc)
        assert instant(at) == at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_an_id_made_for_a_command_is_the_uuid_of_its_text():
    ctx = Context("acme", {}, Actor(subject="s", roles=[]), datetime.now(timezone.utc))
    for _ in range(2000):
        text = ctx.new_id(None)
        value = made_id(text)
        assert type(value) is uuid.UUID and value == uuid.UUID(text) and hash(value) == hash(uuid.UUID(text))
        assert (value.is_safe, value.version) == (uuid.UUID(text).is_safe, 7)
        assert id_text(value) == str(value) == text
    given = str(uuid.uuid4())
    assert made_id(given) == uuid.UUID(given) and made_id(given.upper()) == uuid.UUID(given)


def test_collected_pairs_are_the_collected_events_with_their_aggregates():
    h = Harness()
    corpus(h)
    run = h.ok({"type": "RequestRun", "agent_id": "a"})
    ctx = Context("acme", h.ledger.aggregates, Actor(subject="s", roles=[]), h.now)
    found = ctx.get(type(ctx.aggregates[uuid.UUID(run)]), uuid.UUID(run))
    found.start()
    ctx.add(type(found).request(uuid.uuid4(), "b", "p", None, {}, None))
    found.cancel({"withheld": "metadata-only"})
    expected = sorted([e for a in ctx.touched for e in a.pending_events], key=lambda e: e.timestamp)
    pairs = ctx.collect_pairs()
    assert [e for e, _ in pairs] == expected and len(pairs) == 3
    assert all(a.pending_events == [] for a in ctx.touched)
    assert all(ctx.aggregates[e.originator_id] is a for e, a in pairs)


@pytest.mark.parametrize("event_type", sorted(EVENT_CLASSES))
def test_bears_on_policy_says_whether_the_outcome_says_anything(event_type):
    env = synthetic_envelope(event_type, 1, random.Random(1))
    assert bears_on_policy([env]) is (policy_outcome([env]) != {}) is (event_type in POLICY_TYPES)


def test_a_payload_is_plain_exactly_when_it_needs_no_full_jcs():
    rng = random.Random(13)
    for _ in range(4000):
        payload = {f"k{i}": rng.choice([random_value(rng), {"a": random_text(rng)}, {"a": 1.5}, {"a": {"b": "c"}},
                                        {"a": 2**60}, {"withheld": "metadata-only"}]) for i in range(rng.randint(0, 4))}
        assert _plain(payload) is (not needs_full_jcs(payload))


def test_families_folded_from_pieces_keep_the_earliest_and_latest_times():
    families = Families()
    ledger = TenantLedger("acme", families=families)
    for at in ("2026-12-02T10:00:00.000000Z", "2026-12-02T09:00:00.000000Z", "2026-12-02T11:00:00.000000Z"):
        env = synthetic_envelope("run.started", 1, random.Random(0)) | {"aggregate_id": "r-9", "recorded_at": at}
        fold(ledger, env, tracking("run.started", "run"), "r-9", {}, at, "ann")
    family = families.runs["r-9"]
    assert (family.first_at, family.last_at, family.events) == ("2026-12-02T09:00:00.000000Z",
                                                                "2026-12-02T11:00:00.000000Z", 3)
