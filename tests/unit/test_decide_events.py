"""domain/events.py: an aggregate's events triggered the cheap way leave it as the library's way does.

The state a ledger reaches by deciding equals the state a second ledger rebuilds from the log (the
library's `mutate`), and calling a decorated method through `Triggering` builds the same event and
the same aggregate as eventsourcing's own triggering.
"""
import copy
import uuid

import pytest
from eventsourcing.domain import CommandMethodDecorator

from domain.budget import Budget
from domain.events import Triggering
from domain.ledger import TenantLedger
from domain.registry import AGGREGATES
from domain.run import Run
from tests.unit.harness import Harness
from tests.unit.test_encode_seal import corpus


def test_the_state_decided_is_the_state_replayed_from_the_log():
    h = Harness()
    corpus(h)
    rebuilt = TenantLedger("acme")
    for env in h.log:
        rebuilt.apply(env)
    assert sorted(map(str, rebuilt.aggregates)) == sorted(map(str, h.ledger.aggregates))
    for aggregate_id, aggregate in h.ledger.aggregates.items():
        assert vars(rebuilt.aggregates[aggregate_id]) == vars(aggregate)
    assert rebuilt.chain.head_hash == h.ledger.chain.head_hash


def library_call(aggregate, name: str):
    """The decorated method as eventsourcing binds it, bypassing Triggering."""
    return CommandMethodDecorator.__get__(vars(type(aggregate))[name], aggregate, type(aggregate))


def twins(aggregate):
    return copy.deepcopy(aggregate), copy.deepcopy(aggregate)


def event_fields(event) -> dict:
    return {k: v for k, v in vars(event).items() if k != "timestamp"}


def state(aggregate) -> dict:
    return {k: v for k, v in vars(aggregate).items() if k not in ("_modified_on", "_pending_events")}


@pytest.mark.parametrize("name,args,kwargs", [
    ("set_limit", ("day", 10, "USD"), {}),  # all by position
    ("_cost_recorded", (), {"cost_id": "c", "run_id": None, "provider": "p", "model": "m", "tokens_in": 1,
                            "tokens_out": 2, "amount_micros": 3, "currency": "USD", "day": "2026-12-02"}),
    ("set_limit", ("day",), {"limit_micros": 10, "currency": "USD"}),  # mixed: the library's path
])
def test_a_budget_event_is_triggered_as_the_library_triggers_it(name, args, kwargs):
    fast, slow = twins(Budget.open("acme", "ops"))
    getattr(fast, name)(*args, **kwargs)
    library_call(slow, name)(*args, **kwargs)
    assert state(fast) == state(slow)
    [fast_event], [slow_event] = fast.collect_events()[1:], slow.collect_events()[1:]
    assert (type(fast_event), event_fields(fast_event)) == (type(slow_event), event_fields(slow_event))
    assert (fast.modified_on, slow.modified_on) == (fast_event.timestamp, slow_event.timestamp)


def test_a_run_without_arguments_and_with_them_is_triggered_as_the_library_triggers_it():
    run = Run.request(str(uuid.uuid4()), "agent", "ops", None, {}, None)
    fast, slow = twins(run)
    for aggregate, call in ((fast, getattr), (slow, library_call)):
        call(aggregate, "_started")()
        call(aggregate, "_step_started")(step_id="s1", kind="llm", name="plan", attempt=1)
    assert state(fast) == state(slow)
    assert [event_fields(e) for e in fast.collect_events()] == [event_fields(e) for e in slow.collect_events()]


def test_a_call_that_does_not_fit_fails_as_the_library_fails():
    fast, slow = twins(Budget.open("acme", "ops"))
    with pytest.raises(TypeError) as fast_error:
        fast.set_limit("day", 10)
    with pytest.raises(TypeError) as slow_error:
        library_call(slow, "set_limit")("day", 10)
    assert str(fast_error.value) == str(slow_error.value)
    assert (fast.version, len(fast.pending_events)) == (slow.version, len(slow.pending_events)) == (1, 1)


def test_every_command_method_of_every_aggregate_takes_the_cheap_path():
    decorators = [(agg, name, value) for agg in AGGREGATES.values() for name, value in vars(agg).items()
                  if isinstance(value, Triggering) and value.decorated_func.__name__ != "__init__"]
    assert len(decorators) >= 30
    assert [f"{agg.__name__}.{name}" for agg, name, d in decorators if d.make_plan(agg) is None] == []
