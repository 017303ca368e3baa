"""`@event` for the aggregates: eventsourcing's decorator, triggered without re-reading signatures.

The library's `@event(EventClass)` turns a method into a command: calling it builds the event and
applies it by running the method body, and its metaclass derives the event classes and the replay
path (`event.mutate(aggregate)`) from the decorator. Every call, though, coerces the arguments
against the method's signature, filters them for the event class and again for the method, and
binds a wrapper object: 4-12 µs per event here, as much as the rest of deciding one (docs/bench.md,
"Decide path"). `Triggering` is the library's decorator class, so the metaclass treats it exactly
as before and replay is untouched; only a call on an aggregate is cheaper: the method's parameters
are matched to the event class once, and a call that passes every parameter (all by keyword or
all by position) builds, applies and appends the event as `Aggregate.trigger_event` and
`DecoratedFuncCaller.apply` do. Any other call, or a class the plan does not fit, takes the library's path.
"""
import dataclasses
import inspect
from datetime import datetime
from types import MethodType
from typing import Any, Callable
from uuid import UUID

from eventsourcing import domain as library
from eventsourcing.domain import CanMutateAggregate, CommandMethodDecorator, DecoratedFuncCaller

BASE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic", "self"})


class Triggering(CommandMethodDecorator):
    plan: tuple[tuple[str, ...], frozenset[str], type] | None = None  # parameters, as a set, event class
    planned: bool = False

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None or self.decorated_func.__name__ == "__init__":
            return super().__get__(instance, owner)
        return MethodType(self.trigger_on, instance)

    def trigger_on(self, aggregate: Any, *args: Any, **kwargs: Any) -> None:
        plan = self.plan if self.planned else self.make_plan(type(aggregate))
        if plan is not None:
            names, name_set, event_class = plan
            if args and not kwargs and len(args) == len(names):
                kwargs = dict(zip(names, args))
            elif args or kwargs.keys() != name_set:
                plan = None
        if plan is None:
            return super().__get__(aggregate, type(aggregate))(*args, **kwargs)
        if type(aggregate) in _BARE_STATE:  # the library's properties over its own attributes: read them directly
            state = {"originator_id": aggregate._id, "originator_version": aggregate._version + 1,
                     "timestamp": (datetime.now(tz=library.TZINFO) if event_class.create_timestamp is _LIBRARY_TIMESTAMP
                                   and library.datetime_now_with_tzinfo is _LIBRARY_NOW
                                   else event_class.create_timestamp()), **kwargs}
            if _FIELD_COUNTS.get(event_class) == len(state) and type(state["originator_id"]) is UUID:
                new_event = object.__new__(event_class)  # `instantiate`'s own path: the event's fields are these values
                new_event.__dict__.update(state)
                self.decorated_func(aggregate, **kwargs)
            else:
                new_event = instantiate(event_class, state)
                self.decorated_func(aggregate, **{name: getattr(new_event, name) for name in names})
            aggregate._version = new_event.originator_version
            aggregate._modified_on = new_event.timestamp
            aggregate._pending_events.append(new_event)
            return
        new_event = instantiate(event_class, {"originator_id": aggregate.id,
                                              "originator_version": aggregate.version + 1,
                                              "timestamp": now(event_class), **kwargs})
        self.decorated_func(aggregate, **{name: getattr(new_event, name) for name in names})
        aggregate.version = new_event.originator_version
        aggregate.modified_on = new_event.timestamp
        aggregate.pending_events.append(new_event)

    def make_plan(self, owner: type) -> tuple[tuple[str, ...], frozenset[str], type] | None:
        """The method's parameters and its event class, where the fast call is the library's call."""
        self.planned = True
        event_class = library.decorated_func_callers.get(self)
        parameters = list(inspect.signature(self.decorated_func).parameters.values())[1:]
        names = tuple(p.name for p in parameters)
        fields = set(inspect.signature(event_class).parameters) - BASE_FIELDS if event_class else set()
        fits = (event_class is not None and issubclass(event_class, DecoratedFuncCaller)
                and not getattr(owner, "TOPIC", None) and set(names) == fields
                and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
                and event_class.mutate is CanMutateAggregate.mutate
                and super(DecoratedFuncCaller, event_class).apply is CanMutateAggregate.apply
                and library.decorated_funcs.get(event_class) is self.decorated_func)
        self.plan = (names, frozenset(names), event_class) if fits else None
        if fits:
            bare_state(owner)
            instantiate_plan(event_class)
        return self.plan


_BASE = library.BaseAggregate
_BARE_STATE: set[type] = set()  # aggregate classes whose id, version, modified_on and pending_events are the library's


def bare_state(cls: type) -> bool:
    """Whether `cls`'s id, version, modified_on and pending_events are the library's properties over `_id` etc."""
    if cls not in _BARE_STATE and (cls.id is _BASE.id and cls.version is _BASE.version
                                   and cls.modified_on is _BASE.modified_on
                                   and cls.pending_events is _BASE.pending_events
                                   and type(cls).__setattr__ is type.__setattr__ and cls.__setattr__ is object.__setattr__
                                   and cls.__getattribute__ is object.__getattribute__):
        _BARE_STATE.add(cls)
    return cls in _BARE_STATE


def instantiate_plan(event_class: type) -> int:
    """The field count `instantiate` works with for the class (0: the class builds its own instances)."""
    count = _FIELD_COUNTS.get(event_class)
    if count is None:
        count = _FIELD_COUNTS[event_class] = _field_count(event_class)
    return count


_LIBRARY_NOW = library.datetime_now_with_tzinfo
_LIBRARY_TIMESTAMP = library.CanCreateTimestamp.create_timestamp


def now(event_class: type) -> datetime:
    """`event_class.create_timestamp()`: where both are the library's, its `datetime.now(tz=TZINFO)` directly."""
    if event_class.create_timestamp is _LIBRARY_TIMESTAMP and library.datetime_now_with_tzinfo is _LIBRARY_NOW:
        return datetime.now(tz=library.TZINFO)
    return event_class.create_timestamp()


def event(event_class: type) -> Callable[[Callable[..., None]], Triggering]:
    """`eventsourcing.domain.event(EventClass)`: decorate a command method of an aggregate."""
    def decorate(method: Callable[..., None]) -> Triggering:
        return Triggering(event_class, method)
    return decorate


class _Creation:
    """How `create` builds one aggregate class from one created-event class: worked out once, or None."""

    __slots__ = ("names", "name_set", "init", "topic", "bare")

    def __init__(self, names: tuple[str, ...], init: Callable[..., None], topic: str, bare: bool = False):
        self.names, self.name_set, self.init, self.topic = names, frozenset(names), init, topic
        self.bare = bare  # the library's attributes behind id, version, ... (`bare_state`): set directly


_CREATIONS: dict[tuple[type, type], _Creation | None] = {}


def create(cls: type, event_class: type, id: Any = None, **kwargs: Any) -> Any:  # noqa: A002 (the library's name)
    """`cls._create(event_class, id=id, **kwargs)`, without the library's per-call signature work.

    The library's `_create` filters the arguments for `create_id`, builds the created event, and its
    `mutate` resolves the aggregate's topic and filters the event's fields against `__base_init__` and
    `__init__` (two signature look-ups) before calling them. Where the event's own fields are exactly the
    `__init__` parameters and every one is passed (with a UUID id, no timestamp), that filtering keeps
    everything, so this builds the same event and the same aggregate directly; any other call, or a class
    the plan does not fit, is the library's `_create`.
    """
    key = (cls, event_class)
    plan = _CREATIONS[key] if key in _CREATIONS else _plan_creation(cls, event_class)
    if plan is None or type(id) is not UUID or kwargs.keys() != plan.name_set:
        return cls._create(event_class, id=id, **kwargs)
    created = instantiate(event_class, {"originator_id": id, "originator_version": cls.INITIAL_VERSION,
                                        "timestamp": (datetime.now(tz=library.TZINFO)  # `now(event_class)`
                                                      if event_class.create_timestamp is _LIBRARY_TIMESTAMP
                                                      and library.datetime_now_with_tzinfo is _LIBRARY_NOW
                                                      else event_class.create_timestamp()),
                                        **kwargs, "originator_topic": plan.topic})
    aggregate = cls.__new__(cls)
    if plan.bare and type(created) is event_class and _FIELD_COUNTS[event_class] == 4 + len(kwargs):
        # `instantiate`'s own path, so the event's fields are these values; `__base_init__` is the library's
        at = created.timestamp
        aggregate._id, aggregate._version, aggregate._created_on, aggregate._modified_on = id, cls.INITIAL_VERSION, at, at
        aggregate._pending_events = []
        plan.init(aggregate, **kwargs)
        if event_class.apply is not _NO_APPLY:
            created.apply(aggregate)
        aggregate._pending_events.append(created)
        return aggregate
    aggregate.__base_init__(created.originator_id, created.originator_version, created.timestamp)
    plan.init(aggregate, **{name: getattr(created, name) for name in plan.names})
    created.apply(aggregate)
    aggregate.pending_events.append(created)
    return aggregate


_NO_APPLY = library.CanMutateAggregate.apply  # the library's apply, which does nothing


def _plan_creation(cls: type, event_class: type) -> _Creation | None:
    init = cls.__init__  # the decorated function itself: the library's decorator hands `__init__` back bare
    plan = None
    if (inspect.isfunction(init) and not getattr(cls, "TOPIC", None) and cls not in library._init_mentions_id
            and isinstance(event_class, type) and issubclass(event_class, library.CanInitAggregate)
            and event_class.mutate is library.CanInitAggregate.mutate
            and cls.__base_init__ is library.BaseAggregate.__base_init__
            and cls.__new__ is object.__new__):
        topic = library.get_topic(cls)
        parameters = list(inspect.signature(init).parameters.values())[1:]
        names = tuple(p.name for p in parameters)
        fields = set(inspect.signature(event_class).parameters) - BASE_FIELDS
        if (library.resolve_topic(topic) is cls and set(names) == fields
                and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)):
            plan = _Creation(names, init, topic, bare_state(cls) and instantiate_plan(event_class) > 0)
    _CREATIONS[(cls, event_class)] = plan
    return plan


_FIELD_COUNTS: dict[type, int] = {}  # event class → its number of fields, or 0 where `instantiate` must call it


def instantiate(event_class: type, state: dict[str, Any]) -> Any:
    """`event_class(**state)`, for a `state` that names every field of the event class.

    An event class is a frozen dataclass: its `__init__` sets each field through `object.__setattr__` and its
    `__post_init__` (the library's) checks that the id is a UUID. Where the class has exactly that generated
    `__init__` and that `__post_init__`, the same object is the fields put in its `__dict__` (2 µs less per
    event). Anything else is the class's own call, with its own errors.
    """
    count = _FIELD_COUNTS.get(event_class)
    if count is None:
        count = instantiate_plan(event_class)
    if count != len(state) or type(state["originator_id"]) is not UUID:
        return event_class(**state)
    new_event = object.__new__(event_class)
    new_event.__dict__.update(state)
    return new_event


def _field_count(event_class: type) -> int:
    init = event_class.__init__
    fields = dataclasses.fields(event_class) if dataclasses.is_dataclass(event_class) else ()
    generated = (getattr(getattr(init, "__code__", None), "co_filename", None) == "<string>"
                 and init.__qualname__ == f"{event_class.__qualname__}.__init__")
    plain = (generated and event_class.__post_init__ is library.DomainEvent.__post_init__
             and event_class.__new__ is object.__new__ and all(f.init for f in fields)
             and ["self", *(f.name for f in fields)] == list(inspect.signature(init).parameters)
             and event_class.__dictoffset__ != 0)  # its instances have a __dict__
    return len(fields) if plain else 0
