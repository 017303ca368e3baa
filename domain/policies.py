"""A tenant's policy book: every envelope ever published and which one is active where.

Nothing is edited in place: a new version is a new `policy.published`, a switch (or a rollback)
a new `policy.activated`. The most specific active scope decides a call: (project, environment),
then (project, any), then (any, environment), then the tenant.
"""
from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import InvalidState, NotFound
from domain.events import create, event
from domain.policy import PolicyEnvelope, compiled_of
from domain.policy_source import PolicyRejected, semver_key

Scope = tuple[str | None, str | None]  # (project, environment); None is any


@lru_cache(maxsize=4096)
def policies_id(tenant_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"runledger:policies:{tenant_id}")


def scope_label(scope: Scope) -> str:
    project, environment = scope
    parts = [f"project {project!r}" if project else "", f"environment {environment!r}" if environment else ""]
    return " and ".join(p for p in parts if p) or "the tenant"


def lookup_order(project: str | None, environment: str | None) -> list[Scope]:
    order = [(project, environment), (project, None), (None, environment), (None, None)]
    return list(dict.fromkeys(order))


class Policies(Aggregate):
    """The tenant's published envelopes by policy id and version, and the active one per scope."""

    class Opened(Aggregate.Created):
        pass

    class Published(Aggregate.Event):
        policy_id: str
        version: str
        digest: str
        policies: str
        cedar_schema: str
        published_by: str

    class Activated(Aggregate.Event):
        policy_id: str
        version: str
        digest: str
        project: str | None
        environment: str | None
        activated_by: str

    @classmethod
    def open(cls, tenant_id: str) -> "Policies":
        return create(cls, cls.Opened, id=policies_id(tenant_id))

    @event(Opened)
    def __init__(self) -> None:
        self.envelopes: dict[tuple[str, str], PolicyEnvelope] = {}
        self.latest: dict[str, str] = {}
        self.active: dict[Scope, tuple[str, str]] = {}

    def check_publishable(self, envelope: PolicyEnvelope) -> None:
        last = self.latest.get(envelope.policy_id)
        if last is not None and semver_key(envelope.version) <= semver_key(last):
            raise PolicyRejected(f"version {envelope.version} of policy {envelope.policy_id!r} is not greater than "
                                 f"{last}, the last published; publish a greater version (nothing is edited in place)",
                                 "policy_version_not_greater")

    def publish(self, envelope: PolicyEnvelope, published_by: str) -> None:
        self.check_publishable(envelope)
        self._published(envelope.policy_id, envelope.version, envelope.digest, envelope.policies,
                        envelope.cedar_schema, published_by)

    @event(Published)
    def _published(self, policy_id: str, version: str, digest: str, policies: str, cedar_schema: str,
                   published_by: str) -> None:
        self.envelopes[(policy_id, version)] = PolicyEnvelope(policy_id, version, policies, cedar_schema)
        self.latest[policy_id] = version

    def envelope(self, policy_id: str, version: str) -> PolicyEnvelope:
        found = self.envelopes.get((policy_id, version))
        if found is None:
            known = sorted(v for p, v in self.envelopes if p == policy_id)
            raise NotFound(f"no version {version!r} of policy {policy_id!r} was published"
                           + (f"; published: {', '.join(known)}" if known else ""), "policy_not_published")
        return found

    def activate(self, policy_id: str, version: str, scope: Scope, activated_by: str) -> None:
        envelope = self.envelope(policy_id, version)
        problem = compiled_of(envelope)
        if isinstance(problem, str):
            raise InvalidState(f"{envelope.label} no longer compiles ({problem}); it cannot be activated",
                               "policy_invalid")
        if self.active.get(scope) == (policy_id, version):
            raise InvalidState(f"{envelope.label} is already active for {scope_label(scope)}", "policy_already_active")
        self._activated(policy_id, version, envelope.digest, scope[0], scope[1], activated_by)

    @event(Activated)
    def _activated(self, policy_id: str, version: str, digest: str, project: str | None, environment: str | None,
                   activated_by: str) -> None:
        self.active[(project, environment)] = (policy_id, version)

    def active_for(self, project: str | None, environment: str | None) -> tuple[PolicyEnvelope | None, str]:
        """The envelope deciding a call in this project and environment, and the scope it is active for."""
        for scope in lookup_order(project, environment):
            if scope in self.active:
                return self.envelopes[self.active[scope]], scope_label(scope)
        return None, scope_label((project, environment))
