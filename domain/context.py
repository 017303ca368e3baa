"""What a handler sees while it decides one command: the tenant's aggregates, the actor, the clock."""
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, TypeVar
from uuid import UUID, SafeUUID

from eventsourcing.domain import Aggregate
from uuid_utils import uuid7

from domain.calls import CallWindows
from domain.content import WITHHELD, KeyRing, labels_text, record
from domain.errors import InvalidState, NotFound, VersionConflict
from domain.events import bare_state
from domain.governance import stores_content
from domain.retention import Families, Rules
from schemas.merkle_trees import CompactTree
from domain.run import check_step_id_free
from schemas.envelope import Actor, iso

A = TypeVar("A", bound=Aggregate)
_TEXTS: dict[int, str] = {}  # str(id), by id.int, of the ids the tenants' commands name again and again
_TEXTS_MAX = 1 << 16


def id_text(value: UUID) -> str:
    """`str(value)`, remembered: an aggregate id is formatted several times per command (`UUID.__str__` is Python).

    Keyed by the UUID's `int` (what `UUID.__hash__` and `__eq__` compare), whose hash is not a Python call.
    """
    if type(value) is not UUID:
        return str(value)
    number = value.int
    text = _TEXTS.get(number)
    if text is None:
        if len(_TEXTS) >= _TEXTS_MAX:
            _TEXTS.clear()
        text = _TEXTS[number] = str(value)
    return text


_UNKNOWN = SafeUUID.unknown  # (an enum member's attribute read is a Python call)
_MADE: dict[str, int] = {}  # text → int of the ids `Context.new_id` made and `made_id` has not yet turned into UUIDs


def made_id(text: str) -> UUID:
    """`UUID(text)`; for the text of an id `new_id` made, built from its number and its text remembered for `id_text`."""
    number = _MADE.pop(text, None)
    if number is None:
        return UUID(text)
    value = object.__new__(UUID)  # what UUID(int=number) sets, without its argument checks
    object.__setattr__(value, "int", number)
    object.__setattr__(value, "is_safe", _UNKNOWN)
    if len(_TEXTS) >= _TEXTS_MAX:
        _TEXTS.clear()
    _TEXTS[number] = text
    return value


_new = object.__new__
_COLLECT = Aggregate.collect_events
_PLAIN_COLLECT: set[type] = set()  # aggregate classes whose collect_events is the library's, over `_pending_events`


def _timestamp(pair: tuple[Any, Aggregate]) -> Any:
    return pair[0].timestamp


@dataclass(slots=True)  # one per command: slots make it cheaper to build and to read
class Context:
    tenant_id: str
    aggregates: dict[UUID, Aggregate]
    actor: Actor
    now: datetime
    expected_version: int | None = None
    step_runs: Mapping[str, str] = field(default_factory=dict)
    families: Families = field(default_factory=Families)
    rules: Rules = field(default_factory=Rules)
    sealer: KeyRing | None = None
    tree: CompactTree = field(default_factory=CompactTree)
    signer: Any = None  # domain.evidence.CheckpointSigner, or None where no signing key is configured
    unsigned: int = 0  # events since the last checkpoint (not counting its own)
    touched: list[Aggregate] = field(default_factory=list)
    calls: CallWindows = field(default_factory=CallWindows)  # each agent's recent tool calls (domain/calls.py)

    @property
    def now_iso(self) -> str:
        return iso(self.now)

    iso = staticmethod(iso)

    @staticmethod
    def str_or_none(value: UUID | None) -> str | None:
        return None if value is None else id_text(value)

    @property
    def store_content(self) -> bool:
        return stores_content(self.tenant_id, self.aggregates)

    def content(self, text: str | None):
        """What the log records for a free-text field the actor wrote (domain/content.py)."""
        return record(text, self.store_content, self.actor.subject, self.sealer)

    def labels(self, labels: dict[str, str]):
        if not labels:
            return {}
        return self.content(labels_text(labels)) if self.store_content else dict(WITHHELD)

    def new_id(self, given: UUID | None) -> str:
        """Return the given id unless an aggregate or a step of the tenant has it; none given, a new one."""
        if given is None:
            made = uuid7()
            text = str(made)
            if len(_MADE) >= 1024:
                _MADE.clear()
            _MADE[text] = made.int
            return text
        if given in self.aggregates:
            raise InvalidState(f"{given} already exists", "already_exists")
        text = id_text(given)
        if text in self.step_runs:
            raise InvalidState(f"{given} already exists as a step of run {self.step_runs[text]}",
                               "already_exists")
        return text

    def new_step_id(self, given: UUID | None) -> str:
        if given is not None:
            text = id_text(given)
            check_step_id_free(text, self.step_runs.get(text))
        return self.new_id(given)

    def find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        aggregate = self.aggregates.get(aggregate_id)
        if aggregate is None or not isinstance(aggregate, kind):
            return None
        if not self.families.nothing_swept:  # the checks return at once otherwise
            self.check_not_swept(aggregate)
        touched = self.touched
        if self.expected_version is not None and not touched:
            self.check_expected_version(aggregate)
        for a in touched:  # touch(aggregate)
            if a is aggregate:
                return aggregate
        touched.append(aggregate)
        return aggregate

    def get(self, kind: type[A], aggregate_id: UUID) -> A:
        aggregate = self.find(kind, aggregate_id)
        if aggregate is None:
            raise NotFound(f"no {kind.__name__.lower()} {aggregate_id} in tenant {self.tenant_id}")
        return aggregate

    def check_not_swept(self, aggregate: Aggregate) -> None:
        """What a retention sweep removed from the read models can no longer change."""
        if self.families.nothing_swept:
            return
        family = self.families.swept_family_of(id_text(aggregate.id))
        if family is not None:
            raise InvalidState(f"{type(aggregate).__name__.lower()} {aggregate.id} belongs to run "
                               f"{family.run_id}, which a retention sweep removed (chain_seq "
                               f"{min(family.swept.values())}); it can no longer change", "swept")

    def add(self, aggregate: A) -> UUID:
        self.aggregates[aggregate.id] = aggregate
        self.touch(aggregate)
        return aggregate.id

    def touch(self, aggregate: Aggregate) -> None:
        touched = self.touched
        for a in touched:  # by identity: an aggregate's == compares its whole state
            if a is aggregate:
                return
        touched.append(aggregate)

    def check_expected_version(self, aggregate: Aggregate) -> None:
        """The expected version names the first existing aggregate the command addresses."""
        if self.expected_version is None or self.touched:
            return
        if aggregate.version != self.expected_version:
            raise VersionConflict(f"{type(aggregate).__name__.lower()} {aggregate.id} is at "
                                  f"version {aggregate.version}, not {self.expected_version}")

    def collect_events(self) -> list:
        """Return the new events of every touched aggregate in the order they happened."""
        events = [e for aggregate in self.touched for e in aggregate.collect_events()]
        return sorted(events, key=lambda e: e.timestamp)

    @classmethod
    def of(cls, tenant_id: str, aggregates: dict[UUID, Aggregate], actor: Actor, now: datetime,
           expected_version: int | None, step_runs: Mapping[str, str], families: Families, rules: Rules,
           sealer: KeyRing | None, tree: CompactTree, signer: Any, unsigned: int, calls: CallWindows) -> "Context":
        """`Context(...)` with every field given and nothing touched, without the generated `__init__`'s defaults."""
        ctx = _new(cls)
        ctx.tenant_id, ctx.aggregates, ctx.actor, ctx.now, ctx.expected_version = (tenant_id, aggregates, actor, now,
                                                                                 expected_version)
        ctx.step_runs, ctx.families, ctx.rules, ctx.sealer, ctx.tree = step_runs, families, rules, sealer, tree
        ctx.signer, ctx.unsigned, ctx.touched, ctx.calls = signer, unsigned, [], calls
        return ctx

    def collect_pairs(self) -> list[tuple[Any, Aggregate]]:
        """`collect_events`, each event with the touched aggregate it is of (`aggregates[event.originator_id]`)."""
        pairs = []
        for aggregate in self.touched:
            if type(aggregate) in _PLAIN_COLLECT:  # the library's collect_events over its own list: emptied in place
                pending = aggregate._pending_events
                for e in pending:
                    pairs.append((e, aggregate))
                pending.clear()
            elif type(aggregate).collect_events is _COLLECT and bare_state(type(aggregate)):
                _PLAIN_COLLECT.add(type(aggregate))
                pairs.extend((e, aggregate) for e in aggregate.collect_events())
            else:
                pairs.extend((e, aggregate) for e in aggregate.collect_events())
        if len(pairs) > 1:
            pairs.sort(key=_timestamp)  # stable, as sorted(events, key=timestamp)
        return pairs

    def has_pending_events(self) -> bool:
        return any(aggregate.pending_events for aggregate in self.touched)
