"""The roles of the chaos test, each `runledger serve` in a process of its own, and a watch on them.

Two API processes (API only), two command processors (processor only) and one projector process
(every projector, its embedded chdb in a directory that survives a restart: the port is kept), or,
for the three-broker test (tests/e2e/test_cluster.py), several: each a replica of its own
(RUNLEDGER_PROJECTOR_REPLICA), its chdb and archive read from every partition, while the
PostgreSQL projectors of all of them share one group and split the partitions. A role
the test did not kill that is found dead is a self-exit: written down with the end of its log, and
started again so the run goes on (the judge fails on any).
"""
import asyncio
import signal
import time
from dataclasses import dataclass

from infra.adapters.settings import Settings
from tests.e2e.test_health import HealthService


class Role(HealthService):
    def __init__(self, name: str, kind: str, settings: Settings, api: bool, processor: bool, projectors: bool,
                 extra_env: dict[str, str] | None = None):
        super().__init__(settings, api=api, processor=processor)
        self.args += [] if projectors else ["--no-projectors"]
        self.name, self.kind = name, kind
        self.extra_env = extra_env or {}
        self.killed = False  # by the test, not yet started again

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        self.killed = True
        self.kill(signal.SIGKILL)
        self.log.close()

    def restart(self) -> None:
        self.start()
        self.killed = False

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def as_api_and_projectors(self) -> None:
        """After the run: the projector process again, now with the API, so that the read models in its
        embedded chdb can be verified inside it (verify-readmodels --url); same port, same chdb."""
        self.args = [a for a in self.args if a not in ("--no-api", "--no-projectors")]
        self.api = True


@dataclass
class SelfExit:
    role: str
    returncode: int | None
    at: float
    log_tail: str


class Cluster:
    def __init__(self, settings: Settings, projectors: int = 1):
        """`projectors` > 1: that many projector processes, replicas "a", "b", … (one: the shared groups)."""
        self.apis = [Role(f"api-{i}", "api", settings, True, False, False) for i in "ab"]
        self.processors = [Role(f"processor-{i}", "processor", settings, False, True, False) for i in "ab"]
        replicas = [("projector", {})] if projectors == 1 else [
            (f"projector-{i}", {"RUNLEDGER_PROJECTOR_REPLICA": i}) for i in "abcdefgh"[:projectors]]
        self.projectors = [Role(name, "projector", settings, False, False, True, env) for name, env in replicas]
        self.projector = self.projectors[0]
        self.self_exits: list[SelfExit] = []
        self.watching: asyncio.Task | None = None

    @property
    def roles(self) -> list[Role]:
        return [*self.apis, *self.processors, *self.projectors]

    def of_kind(self, kind: str) -> list[Role]:
        return [r for r in self.roles if r.kind == kind]

    async def start(self, timeout_s: float = 120) -> None:
        for role in self.roles:
            role.start()
        for role in self.roles:
            await role.ready(timeout_s, owning=False)
        self.watching = asyncio.create_task(self.watch())

    async def watch(self) -> None:
        while True:
            for role in self.roles:
                if not role.killed and not role.alive():
                    self.self_exits.append(SelfExit(role.name, role.proc.returncode, time.monotonic(), role.tail()))
                    role.log.close()
                    role.restart()
            await asyncio.sleep(0.5)

    async def stop_watching(self) -> None:
        if self.watching:
            self.watching.cancel()
            await asyncio.gather(self.watching, return_exceptions=True)

    def stop(self) -> list[str]:
        """SIGTERM every role; the roles that did not end cleanly (status other than 0 or -SIGTERM)."""
        unclean = []
        for role in self.roles:
            if role.alive():
                role.stop()
                if role.proc.returncode not in (0, -signal.SIGTERM):
                    unclean.append(f"{role.name} exited {role.proc.returncode} on SIGTERM: {role.log_path}")
        return unclean
