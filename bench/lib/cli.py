"""What every benchmark's command line shares: the common options, sizes (full, --quick, --smoke), the run and its printout."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from bench.lib import host
from bench.lib.measure import MIN_SAMPLES, MIN_WINDOW_S, TOO_SHORT
from bench.lib.report import Report
from bench.lib.stack import target_for

Sizes = dict[str, dict[str, Any]]


def logger(tag: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
    return log


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every benchmark has; each adds its own."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: $RUNLEDGER_KAFKA_BOOTSTRAP, "
                                                     "else a stack of its own, see bench/lib/stack.py)")
    p.add_argument("--database-url", default=None, help="PostgreSQL (default: $RUNLEDGER_DATABASE_URL)")
    p.add_argument("--stack-home", default=None,
                   help="infra/local/stack.sh home of that broker/PostgreSQL, to report their CPU apart")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smaller run (explicit flags still win)")
    size.add_argument("--smoke", action="store_true", help="the smallest run that passes every phase (the test suite's)")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    p.add_argument("--keep", action="store_true", help="keep the bench topics, schemas and work directory")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="tqdm progress bars on stderr (default: only when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def sized(args: argparse.Namespace, sizes: Sizes) -> argparse.Namespace:
    """Fill every option left at None from the size chosen (full, quick or smoke)."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.size = mode
    for dest, value in sizes[mode].items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    return args


def size_help(sizes: Sizes, dest: str) -> str:
    return "full {full}, --quick {quick}, --smoke {smoke}".format(**{m: sizes[m][dest] for m in sizes})


def run(title: str, args: argparse.Namespace, main: Callable[[argparse.Namespace], Awaitable[Report]],
        describe: Callable[[argparse.Namespace], str]) -> int:
    """Run a benchmark against its broker (its own stack if none is given), print its table; 1 if anything broke."""
    started = datetime.now(timezone.utc)
    load_before = host.load_text()
    with target_for(args.bootstrap, args.database_url, args.stack_home) as target:
        args.bootstrap, args.database_url, args.stack_home = target.bootstrap, target.database_url, target.home
        report = asyncio.run(main(args))
    print_report(title, started, load_before, report, describe(args))
    if args.json:
        report.write_json(args.json, started=started.isoformat(), machine=host.machine(), code=host.git_state(),
                          args={k: str(v) for k, v in vars(args).items()})
    return 1 if report.errors else 0


def print_report(title: str, started: datetime, load_before: str, report: Report, described: str) -> None:
    print()
    print(f"## {title} — {started:%Y-%m-%d %H:%M} UTC — {host.machine()}")
    print(f"code: {host.git_state()}")
    print(f"load average before / after: {load_before} / {host.load_text()}; {described}")
    print(f"'others' in the CPU rows = cores used by processes this benchmark did not start; "
          f"'{TOO_SHORT}' = a window under {MIN_WINDOW_S:g} s or under {MIN_SAMPLES:,} samples (no verdict)")
    print()
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    for error in report.errors:
        print(f"ERROR: {error}")
    for text in report.data.get("appendix", []):
        print()
        print(text)


async def guarded(report: Report, what: str, work: Awaitable[Any]) -> Any:
    """Await a phase; if it breaks, record the error (the run goes on) and return None."""
    try:
        return await work
    except Exception as error:  # noqa: BLE001 - reported; exit status 1
        report.errors.append(f"{what} failed: {error!r}")
        traceback.print_exc()
        return None
