"""Helpers for tests against the real broker: unique topic sets, log reads, processes, waiting."""
import asyncio
import base64
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import httpx
from aiokafka import TopicPartition

from infra.adapters.http.auth import Principal, mint
from commands.intake import command_envelope
from infra.adapters import kafka
from infra.adapters.settings import Settings

SECRET = "test-secret-" + "x" * 40
KEK = base64.b64encode(os.urandom(32)).decode()  # a fresh key-encryption key per test session
SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()  # and checkpoint signing key
REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP") or os.environ.get("KAFKA_BOOTSTRAP") or "127.0.0.1:19092"
DATABASE_URL = (os.environ.get("RUNLEDGER_DATABASE_URL") or os.environ.get("DATABASE_URL")
                or "postgresql://runledger:runledger@127.0.0.1:15432/runledger")


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def make_settings(**overrides: Any) -> Settings:
    # Checkpoints only where a test asks for them: their events would change the chains tests count.
    prefix = unique("test")
    values = {"kafka_bootstrap": BOOTSTRAP, "database_url": DATABASE_URL, "jwt_secret": SECRET, "kek": KEK,
              "signing_key": SIGNING_KEY, "checkpoint_interval_s": 0, "checkpoint_every": 0,
              "topic_prefix": prefix, "archive_dir": f"/tmp/runledger-test-archive-{prefix}",
              "partitions": 3, "command_timeout_s": 20.0}
    return Settings(**{**values, **overrides})


def token(tenant: str, subject: str = "agent", roles: tuple[str, ...] = ("operator",)) -> str:
    return mint(SECRET, tenant, subject, list(roles))


def auth(tenant: str, *roles: str, subject: str = "agent") -> dict:
    """The Authorization header of a token for tenant (roles: operator unless given)."""
    return {"Authorization": f"Bearer {token(tenant, subject, roles or ('operator',))}"}


async def send(http, tenant: str, body: dict, *roles: str, subject: str = "agent"):
    """POST one command as tenant and return the response, whatever its status."""
    return await http.post("/v1/commands", json=body, headers=auth(tenant, *roles, subject=subject))


def command(tenant: str, body: dict, subject: str = "agent", roles: tuple[str, ...] = ("operator",),
            key: str | None = None) -> dict:
    """A command envelope exactly as the API would put it on ledger.commands."""
    return command_envelope(Principal(tenant, subject, roles), json.dumps(body).encode(), key, None, None)


async def produce_commands(settings: Settings, commands: list[dict]) -> None:
    producer = kafka.command_producer(settings)
    await producer.start()
    try:
        for c in commands:
            await producer.send(settings.commands_topic, kafka.dumps(c), key=c["tenant_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str) -> list:
    """Every committed record of a topic, partition by partition, in offset order."""
    consumer = kafka.reader(settings)
    await consumer.start()
    try:
        partitions = await kafka.partitions_of(settings, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        return [r for tp in tps async for r in kafka.read_partition(consumer, tp)]
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = kafka.reader(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await kafka.partitions_of(settings, topic))]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def replies(settings: Settings) -> dict[str, dict]:
    return {r["command_id"]: r for r in
            (json.loads(rec.value) for rec in await read_topic(settings, settings.replies_topic))}


async def events(settings: Settings) -> list[dict]:
    return [json.loads(r.value) for r in await read_topic(settings, settings.events_topic)]


async def wait_until(check: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    """Poll a (sync or async) check until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`runledger serve` as a child process with its own settings, killable at will."""

    def __init__(self, settings: Settings, api: bool = True, processor: bool = True):
        self.settings = settings
        self.port = free_port()
        self.args = [sys.executable, "-m", "infra.entry.cli", "serve", "--port", str(self.port)]
        self.args += [] if api else ["--no-api"]
        self.args += [] if processor else ["--no-processor"]
        self.api = api
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(f"/tmp/runledger-test-{settings.topic_prefix}-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "RUNLEDGER_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                "RUNLEDGER_DATABASE_URL": s.database_url,
                "RUNLEDGER_CHDB_PATH": f"/tmp/runledger-test-chdb-{s.topic_prefix}-{self.port}",
                "RUNLEDGER_ARCHIVE_DIR": f"/tmp/runledger-test-archive-{s.topic_prefix}-{self.port}",
                "RUNLEDGER_JWT_SECRET": s.jwt_secret.get_secret_value(),
                **({"RUNLEDGER_KEK": s.kek.get_secret_value(), "RUNLEDGER_KEK_ID": s.kek_id} if s.kek else {}),
                **({"RUNLEDGER_SIGNING_KEY": s.signing_key.get_secret_value()} if s.signing_key else {}),
                "RUNLEDGER_CHECKPOINT_INTERVAL_S": str(s.checkpoint_interval_s),
                "RUNLEDGER_CHECKPOINT_EVERY": str(s.checkpoint_every), "RUNLEDGER_DEPLOYMENT": s.deployment,
                "RUNLEDGER_TOPIC_PREFIX": s.topic_prefix, "RUNLEDGER_PARTITIONS": str(s.partitions),
                "RUNLEDGER_REPLICATION_FACTOR": str(s.replication_factor),
                "RUNLEDGER_MIN_INSYNC_REPLICAS": str(s.min_insync_replicas),
                "RUNLEDGER_COMMAND_TIMEOUT_S": str(s.command_timeout_s),
                "RUNLEDGER_SESSION_TIMEOUT_MS": str(s.session_timeout_ms),
                "RUNLEDGER_SSE_BUFFER": str(s.sse_buffer), "RUNLEDGER_SSE_RETAIN": str(s.sse_retain),
                "RUNLEDGER_RETENTION_MIN_DAYS_AUDIT": str(s.retention_min_days_audit),
                "RUNLEDGER_RETENTION_MIN_DAYS_OPERATIONAL": str(s.retention_min_days_operational),
                "RUNLEDGER_RETENTION_SWEEP_INTERVAL_S": str(s.retention_sweep_interval_s),
                "PYTHONUNBUFFERED": "1"}

    def start(self) -> "Service":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env(), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        return self

    async def health(self) -> dict:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{self.url}/healthz")).json()

    async def ready(self, timeout_s: float = 60, owning: bool = True) -> dict:
        async def healthy():
            assert self.proc.poll() is None, f"service exited: {self.log_path.read_text()[-3000:]}"
            try:
                async with httpx.AsyncClient() as http:
                    response = await http.get(f"{self.url}/healthz")
                    body = response.json()
                    owns = body.get("owned_partitions") or not owning
                    return body if response.status_code == 200 and owns else None
            except httpx.HTTPError:
                return None
        return await wait_until(healthy, timeout_s, f"{self.url}/healthz")

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{self.log_path} did not exit within 30 s of signal {sig}; what it was "
                                     f"doing:\n{self.stacks()}") from None

    def stacks(self) -> str:
        """Ask the process for its threads' and tasks' stacks (infra/entry/dumps.py), SIGKILL it, return its log's end."""
        size = self.log_path.stat().st_size
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(3)  # the dump is written meanwhile; a process that exits after all is fine
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        with open(self.log_path, "rb") as f:
            f.seek(max(0, size - 4000))
            return f.read().decode(errors="replace")[-30000:]

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        self.log.close()


@contextmanager
def service(settings: Settings, **kw):
    svc = Service(settings, **kw).start()
    try:
        yield svc
    finally:
        svc.stop()
