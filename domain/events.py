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
import inspect
from types import MethodType
from typing import Any, Callable

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
        new_event = event_class(originator_id=aggregate.id, originator_version=aggregate.version + 1,
                                timestamp=event_class.create_timestamp(), **kwargs)
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
        return self.plan


def event(event_class: type) -> Callable[[Callable[..., None]], Triggering]:
    """`eventsourcing.domain.event(EventClass)`: decorate a command method of an aggregate."""
    def decorate(method: Callable[..., None]) -> Triggering:
        return Triggering(event_class, method)
    return decorate
