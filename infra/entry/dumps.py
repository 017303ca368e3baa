"""What a process that will not stop is doing: `kill -USR1 <pid>` prints every thread's Python stack and
`kill -USR2 <pid>` every asyncio task's, on each role's event loop, to the process's stderr (its log).

SIGUSR1 is served by faulthandler at the C level, so it answers even when an event loop is blocked;
SIGUSR2 runs on the main loop, and reads the other loops' tasks from there (a snapshot, for reading).

And a process asked to stop ends within STOP_DEADLINE_S whatever hangs (a client library that swallows
its cancellation, a close that waits on a dead peer): it writes every thread's stack to its log and exits
with EXIT_STUCK. That is a kill -9 as far as the ledger is concerned, which every invariant allows for;
a supervisor's own grace period (Kubernetes' 30 s) is then never what ends it.
"""
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading

STOP_DEADLINE_S = 20.0  # > the roles' own 10 s grace before they are cancelled (infra/entry/patience.py)
EXIT_STUCK = 70  # EX_SOFTWARE
log = logging.getLogger("runledger.serve")


def dump_on_signals(loops: dict[str, asyncio.AbstractEventLoop]) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump_tasks, loops)


def dump_tasks(loops: dict[str, asyncio.AbstractEventLoop], out=None) -> None:
    out = out or sys.stderr
    for name, loop in list(loops.items()):
        tasks = asyncio.all_tasks(loop)
        print(f"--- asyncio tasks on the {name} loop: {len(tasks)} ---", file=out)
        for task in sorted(tasks, key=lambda t: t.get_name()):
            print(f"{task.get_name()}: {task!r}"[:400], file=out)
            task.print_stack(limit=12, file=out)
    out.flush()


def exit_if_stuck(deadline_s: float = STOP_DEADLINE_S, exit_=os._exit) -> threading.Timer:
    """From now, deadline_s for the process to end; then its threads' stacks to stderr and exit_(EXIT_STUCK)."""
    def stuck() -> None:
        log.error("still running %.0f s after being asked to stop: exiting with status %s; every thread's stack "
                  "follows", deadline_s, EXIT_STUCK)
        faulthandler.dump_traceback(all_threads=True)
        exit_(EXIT_STUCK)
    timer = threading.Timer(deadline_s, stuck)
    timer.daemon = True
    timer.start()
    return timer
