"""A three-broker KRaft cluster of one's own (a test's, a benchmark's): infra/local/cluster.sh in a temporary home,
on six free ports, its nodes stopped (SIGTERM), killed (SIGKILL) and started again one at a time."""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile

from bench.lib.procs import ROOT, bindable

CLUSTER = ["bash", str(ROOT / "infra" / "local" / "cluster.sh")]


def cluster_base_port() -> int:
    """Six consecutive free ports (three brokers, three controllers), scanned from a random place."""
    start = 43000 + 8 * random.randrange(2000)
    for base in [*range(start, 59000, 8), *range(43000, start, 8)]:
        if all(bindable(p) for p in range(base, base + 6)):
            return base
    raise RuntimeError("no six free consecutive ports for a cluster of one's own")


class KafkaCluster:
    def __init__(self, prefix: str = "rlcluster-"):
        self.home = tempfile.mkdtemp(prefix=prefix)
        self.base_port = cluster_base_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
        self.env = {**base, "RUNLEDGER_HOME": self.home, "RUNLEDGER_CLUSTER_BASE_PORT": str(self.base_port)}

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in (1, 2, 3))

    def port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    def run(self, *args: str) -> None:
        subprocess.run([*CLUSTER, *args], env=self.env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)

    def up(self) -> None:
        self.run("up")

    def down(self, remove: bool = True) -> list[int]:
        """Stop every node (cluster.sh waits until each has exited); the broker processes still alive after it."""
        started = self.pids()
        subprocess.run([*CLUSTER, "down"], env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL)
        if remove:
            shutil.rmtree(self.home, ignore_errors=True)
        return [pid for pid in started if os.path.exists(f"/proc/{pid}")]

    async def stop(self, node: int) -> None:
        await asyncio.to_thread(self.run, "stop", str(node))

    async def kill(self, node: int) -> None:
        await asyncio.to_thread(self.run, "kill", str(node))

    async def start(self, node: int) -> None:
        """Start the node again; returns once it answers and the cluster lists three brokers."""
        await asyncio.to_thread(self.run, "start", str(node))

    def pids(self) -> list[int]:
        """The running nodes' broker processes (from their pid files)."""
        out = []
        for node in (1, 2, 3):
            try:
                with open(os.path.join(self.home, "cluster", f"node-{node}.pid")) as f:
                    out.append(int(f.readline()))
            except (OSError, ValueError):
                pass
        return out
