"""Rebuilds run inside the serving process (needed when chdb, which one process owns, holds the model)."""
import asyncio
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from infra.adapters.settings import Settings
from projectors.base import Projection
from projectors.rebuild import rebuild

log = logging.getLogger("runledger.rebuild")


@dataclass
class RebuildJob:
    projector: str
    state: str = "running"
    done: int = 0
    total: int = 0
    applied: int = 0
    generation: int | None = None
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    finished_at: str | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


class AlreadyRebuilding(Exception):
    pass


class RebuildJobs:
    def __init__(self, settings: Settings, projections: list[Projection]):
        self.settings = settings
        self.projections = {p.name: p for p in projections}
        self.jobs: dict[str, RebuildJob] = {}
        self.tasks: set[asyncio.Task] = set()

    def start(self, name: str) -> RebuildJob:
        current = self.jobs.get(name)
        if current and current.state == "running":
            raise AlreadyRebuilding(f"a rebuild of {name} is already running (started {current.started_at})")
        job = self.jobs[name] = RebuildJob(name)
        task = asyncio.create_task(self.run(job), name=f"rebuild-{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def run(self, job: RebuildJob) -> None:
        try:
            target, job.applied = await rebuild(self.settings, self.projections[job.projector], job.progress)
            job.generation, job.state = target.pinned_generation, "done"
        except Exception as error:
            log.exception("rebuild of %s failed", job.projector)
            job.state, job.error = "failed", f"{type(error).__name__}: {error}"
        job.finished_at = datetime.now(timezone.utc).isoformat()

    def status(self, name: str) -> dict | None:
        job = self.jobs.get(name)
        return asdict(job) if job else None
