"""The servers under test: `serve` with every role (layout one), or an API-only `serve` plus `serve --no-api` (split)."""
from __future__ import annotations

import base64
import os
import secrets
import signal
import sys
import uuid
from pathlib import Path

from bench.lib.procs import Child, free_port, python_argv


class Servers:
    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.secret = secrets.token_urlsafe(36)[:48]
        self.port = free_port()
        self.children: list[Child] = []
        self.api: Child | None = None
        self.profile = Path(args.profile).resolve() if args.profile else None
        self.windows: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, name: str) -> dict[str, str]:
        """None of the caller's RUNLEDGER_* settings leak in; chdb lives in the bench's work directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
        env.update({
            "RUNLEDGER_KAFKA_BOOTSTRAP": self.args.bootstrap,
            "RUNLEDGER_DATABASE_URL": self.args.database_url,
            "RUNLEDGER_JWT_SECRET": self.secret,
            "RUNLEDGER_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RUNLEDGER_TOPIC_PREFIX": self.prefix,
            "RUNLEDGER_API_PORT": str(self.port),
            "RUNLEDGER_CHDB_PATH": str(self.workdir / f"chdb-{name}"),
            "RUNLEDGER_PARTITIONS": str(self.args.partitions),
            "RUNLEDGER_SSE_RETAIN": str(max(100_000, 2 * self.args.replay_events)),
            # an overloaded server answers late rather than 504: the bench waits for every outcome
            "RUNLEDGER_COMMAND_TIMEOUT_S": "120",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def argv(self, *options: str, profile: bool = False) -> list[str]:
        serve = ["serve", "--port", str(self.port), *options]
        if profile and self.profile:   # cProfile on SIGUSR1, dump on SIGUSR2 (bench/streams/profiled.py)
            return [sys.executable, "-m", "bench.streams.profiled", str(self.profile), self.args.serve_entry, *serve]
        return python_argv(self.args.serve_entry, *serve)

    def start(self) -> None:
        if self.args.layout == "one":
            self.api = Child("serve", self.argv(profile=True), self.env("serve"), self.workdir, stop_timeout=90)
            self.children = [self.api]
        else:
            self.api = Child("serve-api", self.argv("--no-processor", "--no-projectors", profile=True),
                             self.env("api"), self.workdir, stop_timeout=90)
            worker = Child("serve-worker", self.argv("--no-api"), self.env("worker"), self.workdir, stop_timeout=90)
            self.children = [self.api, worker]

    def profile_window(self, name: str | None) -> None:
        """Start (name) or end (None) a profiled window of the API server."""
        if not self.profile or not self.api or not self.api.alive():
            return
        if name:
            self.windows.append(name)
        self.api.proc.send_signal(signal.SIGUSR1 if name else signal.SIGUSR2)

    def profiles(self) -> list[tuple[str, Path]]:
        return [(name, Path(f"{self.profile}.{i + 1}")) for i, name in enumerate(self.windows)]

    def pids(self) -> dict[str, int]:
        names = {"serve": "server", "serve-api": "server"}
        return {names.get(c.name, c.name): c.pid for c in self.children}

    def check(self) -> None:
        for child in self.children:
            child.check()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
