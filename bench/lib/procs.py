"""Child processes a benchmark starts: logged to a file, stopped by their own pid only."""
from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A subprocess started from the repo root, its output in WORKDIR/NAME.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 stop_timeout: float = 60):
        self.name = name
        self.stop_timeout = stop_timeout
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """Raise if the child has exited, with the end of its log."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after stop_timeout; return the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} (pid {self.pid}) ignored SIGTERM for {self.stop_timeout}s; killing it",
                      file=sys.stderr, flush=True)
                self.proc.kill()
                self.proc.wait(10)
        self.log_file.close()
        return self.proc.returncode

    def stopped_cleanly(self) -> bool:
        return self.stop() in (0, None, -signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def stack_ports() -> tuple[int, int]:
    """Ports for a stack.sh of one's own: a broker port whose successor (the KRaft controller) is free too, and a
    PostgreSQL port. The scan starts at a random place, so two stacks starting at once seldom meet."""
    pg = free_port()
    start = 41092 + 17 * random.randrange(1000)
    for kafka in [*range(start, 60000, 17), *range(41092, start, 17)]:
        if kafka != pg and pg != kafka + 1 and bindable(kafka) and bindable(kafka + 1):
            return kafka, pg
    raise RuntimeError("no free port pair for a broker of one's own")


def python_argv(entry: str, *args: str, profile: Path | None = None) -> list[str]:
    """`python [-m cProfile -o FILE] -m MODULE ARGS` (or a .py file instead of a module)."""
    target = [entry] if entry.endswith(".py") else ["-m", entry]
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return [sys.executable, *prof, *target, *args]
