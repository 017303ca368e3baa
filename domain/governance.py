"""Legal holds and retention policies: governance records on the tenant's own chain.

Precedence is hold > retention: a sweep removes only families no active hold covers, and it is
decided in the processor, in chain order, so a hold accepted before a sweep is always honoured
by it and a sweep never races a hold (DESIGN invariant 7).
"""
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import Forbidden, InvalidState
from domain.events import create, event
from domain.retention import DEFAULT_DAYS, STORES, Family, scope_covers


class LegalHold(Aggregate):
    """A hold on everything its scope covers, until released; it has no expiry."""

    class Placed(Aggregate.Created):
        matter: str
        reason: str
        scope: dict[str, Any]
        placed_by: str
        platform: bool

    class Released(Aggregate.Event):
        reason: str
        released_by: str

    @classmethod
    def place(cls, hold_id: str, matter: str, reason: str, scope: dict[str, Any], placed_by: str,
              platform: bool) -> "LegalHold":
        """`platform`: placed by a super_admin (from the ops tenant), which only a super_admin may release."""
        return create(cls, cls.Placed, id=UUID(hold_id), matter=matter, reason=reason, scope=scope,
                           placed_by=placed_by, platform=platform)

    @event(Placed)
    def __init__(self, matter: str, reason: str, scope: dict[str, Any], placed_by: str, platform: bool):
        self.matter, self.reason, self.scope = matter, reason, scope
        self.placed_by, self.platform = placed_by, platform
        self.active = True

    def release(self, reason: str, released_by: str, super_admin: bool) -> None:
        if not self.active:
            raise InvalidState(f"legal hold {self.id} ({self.matter}) is already released", "hold_released")
        if self.platform and not super_admin:
            raise Forbidden(f"legal hold {self.id} ({self.matter}) was placed by the platform "
                            f"(super_admin); only a super_admin may release it", "platform_hold")
        self._released(reason, released_by)

    @event(Released)
    def _released(self, reason: str, released_by: str) -> None:
        self.active = False

    def covers(self, family: Family) -> bool:
        return self.active and scope_covers(self.scope, family)

    def label(self) -> str:
        return f"{self.id} ({self.matter})"


@lru_cache(maxsize=4096)
def retention_id(tenant_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"runledger:retention:{tenant_id}")


def stores_content(tenant_id: str, aggregates: dict) -> bool:
    """Whether the tenant has opted in to storing content (SetContentPolicy); metadata-only until then."""
    retention = aggregates.get(retention_id(tenant_id))
    return bool(retention is not None and retention.store_content)


class Retention(Aggregate):
    """A tenant's retention periods per record class, and every sweep that applied them."""

    class Opened(Aggregate.Created):
        pass

    class PolicySet(Aggregate.Event):
        record_class: str
        days: int
        policy_version: int

    class ContentPolicySet(Aggregate.Event):
        store_content: bool

    class SubjectShredded(Aggregate.Event):
        subject: str
        key_ids: list[str]
        reason: str

    class Swept(Aggregate.Event):
        record_class: str
        stores: list[str]
        policy_version: int
        days: int
        cutoff: str
        run_ids: list[str]
        counts: dict[str, int]
        recorded_from: str
        recorded_to: str
        kept_by_holds: dict[str, int]

    @classmethod
    def open(cls, tenant_id: str) -> "Retention":
        return create(cls, cls.Opened, id=retention_id(tenant_id))

    @event(Opened)
    def __init__(self) -> None:
        self.days: dict[str, int] = dict(DEFAULT_DAYS)
        self.policy_version = 0
        self.store_content = False
        self.shredded: dict[str, list[str]] = {}

    def set_content_policy(self, store_content: bool) -> None:
        self._content_policy_set(store_content)

    @event(ContentPolicySet)
    def _content_policy_set(self, store_content: bool) -> None:
        self.store_content = store_content

    def shred(self, subject: str, key_ids: list[str], reason: str) -> None:
        self._subject_shredded(subject, key_ids, reason)

    @event(SubjectShredded)
    def _subject_shredded(self, subject: str, key_ids: list[str], reason: str) -> None:
        self.shredded[subject] = self.shredded.get(subject, []) + key_ids

    def set_days(self, record_class: str, days: int) -> None:
        self._policy_set(record_class, days, self.policy_version + 1)

    @event(PolicySet)
    def _policy_set(self, record_class: str, days: int, policy_version: int) -> None:
        self.days[record_class] = days
        self.policy_version = policy_version

    def sweep(self, record_class: str, cutoff: str, gone: list[Family], kept: dict[str, int]) -> None:
        self._swept(record_class, list(STORES[record_class]), self.policy_version,
                    self.days[record_class], cutoff, [f.run_id for f in gone],
                    {"runs": len(gone), "events": sum(f.events for f in gone)},
                    min(f.first_at for f in gone), max(f.last_at for f in gone), kept)

    @event(Swept)
    def _swept(self, record_class: str, stores: list[str], policy_version: int, days: int, cutoff: str,
               run_ids: list[str], counts: dict[str, int], recorded_from: str, recorded_to: str,
               kept_by_holds: dict[str, int]) -> None:
        pass
