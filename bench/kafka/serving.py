"""`runledger serve` (every role, one process) on the broker bench's stack, and a light open-loop HTTP load on it."""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import urllib.request
from pathlib import Path

from bench.lib.procs import Child, free_port
from bench.lib.report import Report
from bench.lib.tenants import spread_tenants
from bench.lib.topics import bench_settings
from bench.write.http import Layout, every_partition_owned, healthy, start_servers
from bench.write.load import HttpMix, Sample, drive_open_loop, http_client
from infra.adapters import kafka
from infra.adapters.http.auth import mint


class Serving:
    """One `serve` with the API, the processor and every projector, and one light HTTP client per tenant."""

    def __init__(self, args, prefix: str, workdir: Path):
        self.args, self.prefix, self.workdir = args, prefix, workdir
        self.secret = secrets.token_urlsafe(36)
        self.settings = bench_settings(args.bootstrap, prefix, args.partitions, self.secret, args.database_url)
        self.port = free_port()
        self.tenants = spread_tenants(args.tenants, args.partitions, "bench-k")
        self.children: list[Child] = []
        self.https: dict = {}

    async def start(self, report: Report) -> None:
        from infra.entry.client import LedgerClient

        await kafka.ensure_topics(self.settings)
        serve_args = argparse.Namespace(database_url=self.args.database_url, profile_http=None,
                                        serve_entry="infra.entry.cli")
        self.children = start_servers(serve_args, Layout(projectors=True, split=False), self.settings, self.workdir,
                                      self.port, report)
        self.https = {t: http_client("raw", self.port) for t in self.tenants}
        self.clients = {t: LedgerClient(self.https[t], mint(self.secret, t, f"agent:{t}", ["operator"],
                                                            self.settings.jwt_audience)) for t in self.tenants}
        await healthy(self.port, self.children, 120)
        await every_partition_owned(self.clients, self.children, self.tenants, self.args.partitions, 120)

    @property
    def pid(self) -> int:
        return self.children[0].pid

    def stats(self) -> dict:
        """The processor's counters (transactions, commands, events) from /healthz."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as response:
            return json.loads(response.read())

    def load(self, rate: float, seconds: float) -> "asyncio.Task[list[Sample]]":
        """Start `rate` commands/s for `seconds`, open loop, in the background."""
        return asyncio.create_task(drive_open_loop(self.clients, HttpMix(self.tenants), rate, seconds))

    async def stop(self, report: Report) -> None:
        await asyncio.gather(*(h.aclose() for h in self.https.values()), return_exceptions=True)
        for child in self.children:
            if not child.stopped_cleanly():
                report.errors.append(f"{child.name} exited with status {child.proc.returncode}; log: {child.log_path}")
