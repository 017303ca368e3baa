"""The Kafka client benchmark's run: idle broker CPU, raw produce, then the transactional cells, then cleanup."""
from __future__ import annotations

import asyncio
import os
import secrets
import time
from contextlib import nullcontext
from pathlib import Path

from bench.kafka import aio, ck, rows
from bench.kafka.args import parse_args
from bench.kafka.cell import Cell, Raw
from bench.kafka.records import sizes_text
from bench.kafka.requestlog import Counting
from bench.kafka.topics import Topics, create, prefill, remove
from bench.lib import cli, host
from bench.lib.cli import guarded
from bench.lib.meters import cpu_seconds, stack_pid
from bench.lib.report import Report

log = cli.logger("bench kafka")



def clients(args) -> dict:
    """Label → (cell runner, raw producer or None): aiokafka, confluent-kafka tuned and at librdkafka's defaults."""
    tuned = lambda cell, b, t, linger: ck.run_cell(cell, b, t, linger, args.rd_retry_backoff_ms)  # noqa: E731
    found = {aio.CLIENT: (aio.run_cell, aio.raw_produce), ck.label(args.rd_retry_backoff_ms): (tuned, ck.raw_produce),
             ck.label(ck.DEFAULT_BACKOFF_MS): (ck.run_cell, None)}
    return {k: v for k, v in found.items() if k.split(" ")[0] in args.clients}


async def idle_cores(pid: int | None, seconds: float) -> float | None:
    """The broker's CPU (cores) while this benchmark sends it nothing: what other clients and its own timers cost."""
    if not pid:
        return None
    start, wall = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)  # a measuring window, not synchronisation
    end = cpu_seconds(pid)
    return (end - start) / (time.perf_counter() - wall) if start is not None and end is not None else None


async def raw_phase(args, topics: Topics, report: Report) -> list[Raw]:
    out = []
    for client, (_, raw_produce) in clients(args).items():
        if raw_produce is None:
            continue
        log(f"raw produce, {client}: {args.raw_records:,} records")
        raw = await guarded(report, f"raw produce ({client})",
                            raw_produce(args.bootstrap, topics.raw(client), args.raw_records))
        if raw:
            out.append(raw)
    return out


async def cell_phase(args, topics: Topics, report: Report, broker: int | None) -> list[Cell]:
    """Each batch size with every client in turn, so both meet the same machine within seconds of each other."""
    out = []
    for batch in args.batches:
        for client, (run_cell, _) in clients(args).items():
            log(f"transactions of {batch}, {client}: {args.duration:g} s")
            cell = Cell(client, batch, args.duration, broker)
            counting = Counting(args.bootstrap, Path(args.stack_home, "kafka.log"), topics.prefix) \
                if args.count_requests else nullcontext()
            async with counting:
                done = await guarded(report, f"txn batch {batch} ({client})",
                                     run_cell(cell, args.bootstrap, topics, args.linger_ms))
            if done and args.count_requests:
                rows.request_rows(report, done, counting.traffic)
            if done:
                out.append(done)
                if done.commands >= topics.commands_count - batch:
                    report.notes.append(f"{client} at batch {batch} ran out of commands before {args.duration:g} s: "
                                        "raise --commands")
    return out


async def main_async(args) -> Report:
    report = Report()
    if note := host.busy_note():
        report.notes.append(note)
    topics = Topics(f"benchk{secrets.token_hex(4)}", args.commands)
    broker = stack_pid(args.stack_home, "kafka")
    if not broker:
        report.notes.append("broker CPU not measured: no --stack-home / RUNLEDGER_HOME with a kafka.pid")
    log(f"{topics.prefix}: broker {args.bootstrap} (pid {broker}); {sizes_text()}")
    try:
        await create(args.bootstrap, topics, args.clients)
        await prefill(args.bootstrap, topics)
        idle = await idle_cores(broker, args.idle_s)
        if idle is not None:
            report.info("broker idle", "broker cores, nothing from this benchmark",
                        f"{idle:.3f} over {args.idle_s:g} s (other sessions' idle clients included)")
        raws = await raw_phase(args, topics, report)
        cells = await cell_phase(args, topics, report, broker)
        rows.raw_rows(report, raws)
        for cell in cells:
            rows.cell_rows(report, cell, idle)
        rows.ratio_rows(report, cells)
        report.data.setdefault("appendix", []).append(rows.appendix(cells, raws, idle))
    finally:
        if not args.keep:
            try:
                await remove(args.bootstrap, topics)
            except Exception as error:  # noqa: BLE001
                report.notes.append(f"could not delete the bench topics {topics.prefix}.*: {error!r}")
    return report


def describe(args) -> str:
    import confluent_kafka
    import aiokafka
    return (f"broker {args.bootstrap}; size {args.size}: {args.duration:g} s per cell after one warm-up transaction, "
            f"batches {args.batches}, {args.commands:,} commands pre-produced, raw {args.raw_records:,} records; "
            f"aiokafka {aiokafka.__version__}, confluent-kafka {confluent_kafka.version()} "
            f"(librdkafka {confluent_kafka.libversion()[0]}); transactional linger {args.linger_ms} ms; "
            f"confluent-kafka retry.backoff.ms {args.rd_retry_backoff_ms} (and 100, its default, as '(defaults)'); "
            f"records: {sizes_text()}; bench pid {os.getpid()}")


def main(argv: list[str] | None = None) -> int:
    return cli.run("runledger Kafka clients: the transactional path", parse_args(argv), main_async, describe)
