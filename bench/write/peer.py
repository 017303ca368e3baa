"""Phase 4: the `eventsourcing` library on PostgreSQL, the same domain aggregates and command mix.

Aggregates stay in memory, as in the processor, so there are no reads. batch: one
Application.save of every aggregate touched by 1,000 commands (one DB transaction, like one
processor batch); batch+db-functions: the same with POSTGRES_ENABLE_DB_FUNCTIONS=y; single: one
save per command. The library's PostgreSQL backend counts under "others" in the CPU rows.
"""
from __future__ import annotations

import os
import secrets
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

from bench.lib.measure import Window
from bench.lib.meters import CpuMeter
from bench.write.workload import Command

MODES = (("batch", 1000, "n"), ("batch+db-functions", 1000, "y"), ("single", 1, "n"))


def library_env(database_url: str, schema: str) -> dict[str, str]:
    url = urlparse(database_url)
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": url.path.lstrip("/"),
            "POSTGRES_HOST": url.hostname or "127.0.0.1", "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "", "POSTGRES_PASSWORD": url.password or "",
            "POSTGRES_SCHEMA": schema}


class Aggregates:
    """The runs and budgets the mix touches, decided with the domain's own aggregates."""

    def __init__(self) -> None:
        from domain.budget import Budget
        from domain.run import Run
        self.run_cls, self.budget_cls = Run, Budget
        self.runs: dict[str, Any] = {}
        self.budgets: dict[tuple[str, str], Any] = {}

    def decide(self, tenant: str, body: dict) -> Any:
        """Apply one command; return the aggregate it changed."""
        from schemas.envelope import iso
        if body["type"] == "RequestRun":
            run = self.runs[body["run_id"]] = self.run_cls.request(body["run_id"], body["agent_id"], body["project"],
                                                                  None, body["labels"])
            return run
        run = self.runs[body["run_id"]]
        if body["type"] == "StartRun":
            run.start()
            return run
        budget = self.budget(tenant, run.project)
        budget.record_cost(str(uuid.uuid4()), body["run_id"], body["provider"], body["model"], body["tokens_in"],
                           body["tokens_out"], body["amount_micros"], body["currency"], None,
                           iso(datetime.now(timezone.utc)))
        return budget

    def budget(self, tenant: str, project: str) -> Any:
        if (tenant, project) not in self.budgets:
            self.budgets[(tenant, project)] = self.budget_cls.open(tenant, project)
        return self.budgets[(tenant, project)]


def drive(app, work: list[Command], batch: int) -> Window:
    """Decide every command, saving the touched aggregates every `batch` commands."""
    aggregates, touched, events = Aggregates(), {}, 0
    started = time.perf_counter()
    for i, (tenant, body, _) in enumerate(work):
        aggregate = aggregates.decide(tenant, body)
        touched[id(aggregate)] = aggregate
        if (i + 1) % batch == 0 or i + 1 == len(work):
            pending = list(touched.values())
            events += sum(len(a.pending_events) for a in pending)
            app.save(*pending)
            touched.clear()
    return Window(events, time.perf_counter() - started)


def one_mode(env: dict[str, str], mode: str, batch: int, db_functions: str, work: list[Command]) -> dict:
    from eventsourcing.application import Application

    name = "Peer" + mode.title().replace("+", "").replace("-", "")
    app = type(name, (Application,), {"name": name})(env={**env, "POSTGRES_ENABLE_DB_FUNCTIONS": db_functions})
    meter = CpuMeter({"bench (eventsourcing)": os.getpid()})
    try:
        window = drive(app, work, batch)
    finally:
        app.close()
    return {"window": window, "commands_per_save": batch, "cpu": meter.stop()}


def phase_peer(args, work: list[Command], log) -> dict[str, dict]:
    """Every mode on a fresh schema (dropped afterwards unless --keep)."""
    import psycopg

    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    results = {}
    try:
        for mode, batch, db_functions in MODES:
            if mode != "batch+db-functions" or args.peer_db_functions:
                results[mode] = one_mode(library_env(args.database_url, schema), mode, batch, db_functions, work)
                log(f"phase 4: eventsourcing/postgres {mode}: {results[mode]['window'].text()}")
    finally:
        if not args.keep:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return results
