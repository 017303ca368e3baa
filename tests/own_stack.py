"""A stack of a test's own: infra/local/stack.sh in a temporary home, on free ports.

For tests that stop, pause or kill the broker or PostgreSQL: never the shared stack on 19092/15432,
so the fault hurts nobody else's test.
"""
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager

from bench.lib.procs import stack_ports
from tests.support import REPO

STACK = ["bash", str(REPO / "infra" / "local" / "stack.sh")]


def free_ports() -> tuple[int, int]:
    """A broker port whose successor (the KRaft controller) is free too, and a PostgreSQL port."""
    return stack_ports()


@contextmanager
def running_stack(prefix: str):
    """An OwnStack up for the block, down (and removed) after it."""
    own = OwnStack(prefix)
    try:
        own.up()
        yield own
    finally:
        own.down()


class OwnStack:
    def __init__(self, prefix: str = "rlstack-"):
        self.home = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.home, 0o755)  # PostgreSQL runs as the postgres user, which must reach its data directory
        self.kafka_port, self.pg_port = free_ports()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
        self.env = {**base, "RUNLEDGER_HOME": self.home, "RUNLEDGER_KAFKA_PORT": str(self.kafka_port),
                    "RUNLEDGER_KAFKA_CONTROLLER_PORT": str(self.kafka_port + 1), "RUNLEDGER_PG_PORT": str(self.pg_port)}

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://runledger:runledger@127.0.0.1:{self.pg_port}/runledger"

    def up(self) -> None:
        """Start both (idempotent: a service already running is left running)."""
        subprocess.run([*STACK, "up"], env=self.env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)

    def down(self, remove: bool = True) -> None:
        subprocess.run([*STACK, "down"], env=self.env, cwd=REPO, stdout=subprocess.DEVNULL)
        if remove:
            shutil.rmtree(self.home, ignore_errors=True)

    def pid(self, pidfile: str) -> int:
        with open(os.path.join(self.home, pidfile)) as f:
            return int(f.readline())

    def signal_postgres(self, sig: int) -> None:
        os.kill(self.pid("pg/postmaster.pid"), sig)

    def signal_kafka(self, sig: int) -> None:
        os.kill(self.pid("kafka.pid"), sig)

    def kill_kafka(self) -> None:
        """SIGKILL the broker; `up` starts it again on the same data."""
        self.signal_kafka(signal.SIGKILL)

    def kill_postgres(self) -> None:
        """SIGKILL the postmaster and every backend at once, as a crash would; `up` starts it again, and
        PostgreSQL recovers from its WAL. The pid file stays behind, as after a crash."""
        postmaster = self.pid("pg/postmaster.pid")
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        for pid in [postmaster, *map(int, children)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone([postmaster, *map(int, children)])

    def stop_postgres(self) -> None:
        pg_ctl = [sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1], "-D", os.path.join(self.home, "pg"),
                  "-m", "fast", "-w", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *pg_ctl] if os.geteuid() == 0 else pg_ctl,
                       check=True, stdout=subprocess.DEVNULL, cwd="/")


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    """Until none of the processes exists any more (a SIGKILLed process is gone once the kernel reaps it)."""
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{p}") and not zombie(p) for p in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {pids} still exist {timeout:.0f} s after SIGKILL")
        time.sleep(0.05)


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True
