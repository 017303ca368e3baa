"""Phase kills: two processors share the partitions under steady load; SIGKILL the owner of some, time the takeover.

Where the seconds go comes from the successor's own log lines (JSON, one object a line, with the
machine's monotonic clock, which every process shares and no clock step moves): `assigned`
when the group gives it the partitions (detection ends), and `owning` once it holds one, with the
seconds its fencing (init_transactions), its rebuild (snapshot + replay) and the whole acquisition
took. The rest is `queued` (waiting behind the acquisition of other partitions) and `first accept`
(from owning to the first reply the bench reads).
"""
from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bench.failover.load import Load
from bench.lib.procs import Child, python_argv
from bench.write.workload import serve_env
from infra.adapters.settings import Settings

RELEASED = re.compile(r"^(released|dropping) partition (\d+)")


@dataclass
class Takeover:
    kill: int
    partition: int
    gap_s: float | None          # kill → first reply committed by the successor
    detection_s: float | None    # kill → the successor's `assigned` line naming the partition
    fencing_s: float | None
    rebuild_s: float | None
    queued_s: float | None       # assigned → acquisition began (other partitions first)
    first_accept_s: float | None  # owning → first reply read


def lines_of(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "monotonic" in entry:  # the failover lines: the clock the bench keeps too (wall clocks step)
                entry["at"] = entry["monotonic"]
                out.append(entry)
            elif "message" in entry:
                out.append(entry)
    return out


def owned_by(path: Path) -> set[int]:
    """The partitions a processor's log says it owns now."""
    owned: set[int] = set()
    for entry in lines_of(path):
        if "owning" in entry:
            owned.add(entry["owning"])
        elif match := RELEASED.match(entry.get("message", "")):
            owned.discard(int(match.group(2)))
    return owned


class Processors:
    """The two processors, each `serve --no-api --no-projectors` with its log in the work directory."""

    def __init__(self, settings: Settings, workdir: Path, extra: dict[str, str | None]):
        self.settings, self.workdir, self.extra = settings, workdir, extra
        self.children: dict[str, Child] = {}
        self.starts = 0

    def start(self, name: str) -> Child:
        self.starts += 1
        env = serve_env(self.settings, self.workdir / name, self.extra)
        (self.workdir / name).mkdir(parents=True, exist_ok=True)
        argv = python_argv("infra.entry.cli", "serve", "--no-api", "--no-projectors")
        child = self.children[name] = Child(f"{name}-{self.starts}", argv, env, self.workdir)
        return child

    def owners(self) -> dict[str, set[int]]:
        return {name: owned_by(c.log_path) for name, c in self.children.items() if c.alive()}

    def stop(self) -> list[str]:
        return [f"{c.name} exited with {c.proc.returncode}: {c.log_path}"
                for c in self.children.values() if not c.stopped_cleanly()]


async def settled(procs: Processors, load: Load, partitions: int, settle_s: float, give_up_s: float) -> dict:
    """Wait until every partition has one live owner and has accepted for settle_s; return the owners."""
    deadline, since = time.monotonic() + give_up_s, time.monotonic()
    while time.monotonic() < deadline:
        for child in procs.children.values():
            child.check()
        owners = procs.owners()
        held = sorted(p for ps in owners.values() for p in ps)
        if held == list(range(partitions)) and all(owners.values()):
            now = time.monotonic()
            if now - since >= settle_s and all(load.accepting_since(p, now - 1) for p in held):
                return owners
        else:
            since = time.monotonic()
        await asyncio.sleep(0.2)
    raise RuntimeError(f"partitions never settled on two owners: {procs.owners()}")


def split(entries: list[dict], partition: int, killed_at: float, gap_at: float | None, kill: int) -> Takeover:
    after = [e for e in entries if e.get("at", -1.0) >= killed_at]
    assigned = next((e for e in after if partition in e.get("assigned", ())), None)
    owning = next((e for e in after if e.get("owning") == partition), None)
    detection = assigned["at"] - killed_at if assigned else None
    fencing = owning["fencing_s"] if owning else None
    rebuild = owning["rebuild_s"] if owning else None
    began = owning["at"] - owning["acquire_s"] if owning else None
    queued = max(0.0, began - assigned["at"]) if owning and assigned else None
    first = gap_at - owning["at"] if owning and gap_at else None
    return Takeover(kill, partition, gap_at - killed_at if gap_at else None, detection, fencing, rebuild, queued,
                    first)


async def one_kill(kill: int, procs: Processors, load: Load, args) -> list[Takeover]:
    owners = await settled(procs, load, args.partitions, args.settle_s, args.give_up_s)
    victim = sorted(owners)[kill % len(owners)]
    survivor = next(n for n in owners if n != victim)
    lost = sorted(owners[victim])
    killed_at = time.monotonic()
    procs.children[victim].proc.send_signal(signal.SIGKILL)
    ends = await load.reply_ends()
    deadline = time.monotonic() + args.give_up_s
    while time.monotonic() < deadline and any(load.first_accept(p, ends[p]) is None for p in lost):
        procs.children[survivor].check()
        await asyncio.sleep(0.05)
    procs.children[victim].proc.wait(10)
    entries = lines_of(procs.children[survivor].log_path)
    taken = [split(entries, p, killed_at, load.first_accept(p, ends[p]), kill) for p in lost]
    procs.start(victim)  # back to two members (its joining is a rebalance of its own, not measured here)
    return taken


async def kills_phase(settings: Settings, workdir: Path, extra: dict[str, str | None], args, log) -> list[Takeover]:
    procs = Processors(settings, workdir, extra)
    load = Load(settings, args.rate)
    takeovers: list[Takeover] = []
    try:
        procs.start("a")
        procs.start("b")
        await load.start()
        for kill in range(args.kills):
            taken = await one_kill(kill, procs, load, args)
            takeovers += taken
            log(f"kill {kill + 1}/{args.kills}: " + ", ".join(
                f"p{t.partition} {t.gap_s if t.gap_s is None else round(t.gap_s, 2)} s" for t in taken))
    finally:
        await load.stop()
        errors = procs.stop()
    if load.rejected:
        errors.append(f"{load.rejected} commands were rejected (every one should be accepted)")
    if errors:
        raise RuntimeError("; ".join(errors))
    return takeovers
