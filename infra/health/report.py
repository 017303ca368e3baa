"""Liveness, readiness and the detailed report of this process's roles, from probes and the roles' state.

- live(): each role's event loop runs a callback within the probe timeout. It touches no
  dependency: a process whose loops answer is alive, whatever PostgreSQL or Kafka are doing.
- ready(): the dependencies are probed (bounded, cached, concurrently: the answer takes at most
  one probe timeout), each role's parts are judged (infra/health/parts.py), and the answer says
  what works and what does not. 200 while the process (or the role asked for) serves anything,
  503 when it serves nothing.
- report(): /healthz, the long-standing flat keys (`api`, `processor`, `owned_partitions`,
  `projector:<name>`, …) now telling the parts' truth, plus everything ready() says.

The roles' state is read across threads (the processor and the projectors run on loops of their
own, infra/entry/bootstrap.py): plain attributes only, nothing awaited on their loops.
"""
import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from infra.adapters.probes import Probe, loop_answers, utcnow
from infra.health.parts import (Part, capability, dependency, fold, hub_part, needing, processor_part,
                                projector_part, sentence)

UNREADY = frozenset({"down", "starting"})


@dataclass
class Roles:
    """What runs in this process: `projectors` names each projection and the store it needs."""
    api: bool = False
    hub: Any = None  # streams.hub.ChannelHub, with the API
    api_building: bool = False  # the API waits for PostgreSQL to be built (infra/adapters/http/deferred.py)
    processor: Any = None  # commands.processor.CommandProcessor
    processor_needs: tuple[str, ...] = ("broker",)
    projectors: dict[str, str | None] = field(default_factory=dict)  # name → "postgres", "clickhouse" or None
    runners: list = field(default_factory=list)  # projectors.runner.ProjectorRunner, filled once they are built

    @property
    def names(self) -> list[str]:
        return [name for name, runs in (("api", self.api), ("processor", self.processor is not None),
                                        ("projectors", bool(self.projectors))) if runs]


class Since:
    """When each reported thing entered its status: as its source says where it knows, else when first seen."""

    def __init__(self, clock: Callable[[], datetime]):
        self.clock = clock
        self.seen: dict[str, tuple[str, datetime]] = {}

    def of(self, key: str, status: str, told: datetime | None = None) -> datetime:
        last = self.seen.get(key)
        if last is None or last[0] != status or (told is not None and told != last[1]):
            last = self.seen[key] = (status, told or self.clock())
        return last[1]


class Health:
    def __init__(self, roles: Roles, probes: dict[str, Probe], loops: dict[str, asyncio.AbstractEventLoop],
                 timeout_s: float, legacy: list[Callable[[bool], dict]] = (),
                 clock: Callable[[], datetime] = utcnow):
        """`legacy`: what gives /healthz its long-standing keys (bootstrap's health(), the verification job's)."""
        self.roles, self.probes, self.loops, self.timeout_s = roles, probes, loops, timeout_s
        self.legacy, self.clock, self.since = list(legacy), clock, Since(clock)

    async def live(self) -> tuple[int, dict]:
        names = sorted(self.loops)
        answers = await asyncio.gather(*(loop_answers(self.loops[n], self.timeout_s) for n in names))
        loops = {name: "ok" if answered else "down" for name, answered in zip(names, answers)}
        status = "ok" if all(answers) else "down"
        return (200 if status == "ok" else 503), {"status": status, "loops": loops, "timeout_s": self.timeout_s}

    async def ready(self, detail: bool, role: str | None = None) -> tuple[int, dict]:
        body = await self.readiness(detail)
        status = body["roles"][role]["status"] if role else body["status"]
        return (503 if status in UNREADY else 200), body

    async def report(self, detail: bool) -> tuple[int, dict]:
        body = await self.readiness(detail)
        flat = {k: v for source in self.legacy for k, v in source(detail).items()}
        flat.update(self.flat_statuses(body))
        ok = all(v in ("ok", "degraded") for v in [*flat.values(), body["status"]] if isinstance(v, str))
        return (200 if ok else 503), {**flat, **body}

    async def readiness(self, detail: bool) -> dict:
        now = self.clock()
        dependencies = await self.dependencies()
        roles = {name: self.judge(name, dependencies) for name in self.roles.names}
        works, fails = self.sentences(roles)
        statuses = [r["status"] for r in roles.values()]
        return {"status": fold(statuses), "since": self.since.of("process", fold(statuses)).isoformat(),
                "checked_at": now.isoformat(),
                "dependencies": {n: self.view(f"dependency:{n}", p, detail) for n, p in dependencies.items()},
                "roles": {n: self.role_view(n, r, detail) for n, r in roles.items()},
                "works": works, "fails": fails}

    async def dependencies(self) -> dict[str, Part]:
        names = sorted(self.probes)
        observed = await asyncio.gather(*(self.probes[n].observe() for n in names))
        return {name: dependency(o) for name, o in zip(names, observed)}

    def judge(self, role: str, dependencies: dict[str, Part]) -> dict:
        parts = self.parts(role, dependencies)
        return {"status": fold([p.status for p in parts.values()]), "parts": parts}

    def parts(self, role: str, dependencies: dict[str, Part]) -> dict[str, Part]:
        if role == "api":
            found = {name: self.api_part(store, dependencies) for name, store in
                     (("commands", "broker"), ("postgres_reads", "postgres"), ("clickhouse_reads", "clickhouse"))
                     if store in dependencies}
            if self.roles.hub is not None:
                found["live_streams"] = needing(hub_part(self.roles.hub), dependencies, "postgres")
            return found
        if role == "processor":
            return {"deciding": needing(processor_part(self.roles.processor), dependencies,
                                        *self.roles.processor_needs)}
        runners = {r.projection.name: r for r in list(self.roles.runners)}
        return {name: needing(projector_part(runners.get(name)), dependencies, "broker", *([store] if store else []))
                for name, store in self.roles.projectors.items()}

    def api_part(self, store: str, dependencies: dict[str, Part]) -> Part:
        if self.roles.api_building:
            return needing(Part("starting", reason="the API is being built: it needs PostgreSQL"), dependencies,
                           "postgres", store)
        return capability(store, dependencies)

    def view(self, key: str, part: Part, detail: bool) -> dict:
        shown: dict[str, Any] = {"status": part.status, "since": self.since.of(key, part.status, part.since).isoformat(),
                                 **part.public}
        if detail:
            shown.update({k: v for k, v in (("reason", part.reason), ("cause", part.cause),
                                            ("needs", part.needs)) if v is not None})
            shown.update(part.facts)
        return shown

    def role_view(self, role: str, judged: dict, detail: bool) -> dict:
        since = self.since.of(f"role:{role}", judged["status"]).isoformat()
        return {"status": judged["status"], "since": since,
                "parts": {n: self.view(f"{role}:{n}", p, detail) for n, p in judged["parts"].items()}}

    def sentences(self, roles: dict[str, dict]) -> tuple[list[str], list[str]]:
        works: list[str] = []
        fails: list[str] = []
        for role, judged in roles.items():
            for name, part in judged["parts"].items():
                working, text = sentence(role, name, part)
                (works if working else fails).append(text)
        return works, fails

    @staticmethod
    def flat_statuses(body: dict) -> dict[str, str]:
        """The long-standing /healthz keys, from the parts: `api`, `processor` and `projector:<name>`."""
        roles = body["roles"]
        flat = {name: roles[name]["status"] for name in ("api", "processor") if name in roles}
        for name, part in roles.get("projectors", {}).get("parts", {}).items():
            flat[f"projector:{name}"] = part["status"]
        return flat
