"""The streams benchmark's run: start the servers, fan-out, replay, stop, clean up (docs/bench-streams.md)."""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import shutil
import tempfile
from pathlib import Path

from bench.lib import cli
from bench.lib.cli import guarded
from bench.lib.report import Report
from bench.lib.topics import delete_topics, drop_read_models
from bench.streams.api import Commands
from bench.streams.args import parse_args
from bench.streams.fanout import Fan, fanout
from bench.streams.profile import profile_summary
from bench.streams.replay import replay
from bench.streams.server import Servers
from bench.streams.worker import raise_nofile

log = cli.logger("bench streams")


async def phases(args, servers: Servers, report: Report) -> None:
    import httpx
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
    timeout = httpx.Timeout(130.0, pool=None)   # the server gives up on an outcome after 120 s
    spawn = mp.get_context("spawn")
    async with httpx.AsyncClient(base_url=servers.url, timeout=timeout, limits=limits) as http:
        commands = Commands(http, servers)
        if "fanout" in args.only:
            await fanout(Fan(args, servers, spawn, commands, log), report)
        if "replay" in args.only:
            await replay(args, servers, spawn, commands, report, log)


def profiles(servers: Servers, args, report: Report, workdir: Path) -> None:
    for name, path in servers.profiles():
        if not path.exists():
            report.notes.append(f"no profile was written to {path} (see {workdir})")
            continue
        try:
            report.data.setdefault("appendix", []).append(f"=== {name} ({path})\n" + profile_summary(path, args.profile_top))
        except Exception as error:  # noqa: BLE001
            report.notes.append(f"could not read the profile {path}: {error!r}")


async def cleanup(args, servers: Servers, workdir: Path, report: Report) -> None:
    try:
        await delete_topics(args.bootstrap, [servers.prefix])
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not delete the bench topics: {error!r}")
    try:
        await asyncio.to_thread(drop_read_models, args.database_url, [servers.prefix])
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not drop the bench read models: {error!r}")
    for path in workdir.glob("chdb-*"):
        shutil.rmtree(path, ignore_errors=True)


async def main_async(args) -> Report:
    report = Report()
    if not args.database_url:
        report.errors.append("the streams benchmark needs PostgreSQL: --database-url or RUNLEDGER_DATABASE_URL")
        return report
    nofile, need = raise_nofile(), args.subscribers // max(1, args.client_procs) + 200
    if "fanout" in args.only and nofile < need:
        report.notes.append(f"open-files limit {nofile} is below the {need} a client process needs")
    workdir = Path(tempfile.mkdtemp(prefix="rlstreams-"))
    servers = Servers(args, workdir)
    log(f"servers: prefix {servers.prefix}, port {servers.port}, layout {args.layout}, logs in {workdir}")
    servers.start()
    try:
        await guarded(report, "streams benchmark", phases(args, servers, report))
    finally:
        log("stopping the servers")
        servers.stop()
        profiles(servers, args, report, workdir)
        if not args.keep:
            await cleanup(args, servers, workdir, report)
    report.data["workdir"] = str(workdir)
    return report


def describe(args) -> str:
    return (f"size {args.size}: layout {args.layout}; {args.subscribers:,} subscribers over {args.client_procs} "
            f"client process(es); rates {', '.join(f'{r:g}' for r in args.rates)} cmd/s × {args.duration:g} s; "
            f"replay {args.replay_events:,} events × {args.replay_runs}"
            + ("; API server under cProfile" if args.profile else ""))


def main(argv: list[str] | None = None) -> int:
    return cli.run("runledger SSE streams", parse_args(argv), main_async, describe)
