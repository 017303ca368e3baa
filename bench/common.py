"""Pieces every benchmark here shares: the report table, and subprocesses stopped by their own pid."""
from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    phase: str
    metric: str
    measured: str
    target: str = "—"
    verdict: str = "info"


@dataclass
class ReportBase:
    """Rows of measured vs target; each benchmark adds its own ways of adding rows."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        header = ("phase", "metric", "measured", "target", "verdict")
        rows = [header] + [(r.phase, r.metric, r.measured, r.target, r.verdict) for r in self.rows]
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(header), sep] + [line(r) for r in rows[1:]])


class Child:
    """A subprocess a benchmark started, logging to a file; stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 stop_timeout: float = 60):
        self.name = name
        self.argv = argv
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

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
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
