"""The read benchmark's commands: bench.lib.workload's realistic mix, built as the API builds them."""
from __future__ import annotations

import json
import math

from tqdm import tqdm

from infra.adapters.http.auth import Principal
from commands.intake import command_envelope
from bench.lib.workload import workload

COMMANDS_PER_RUN = 18.65  # bench.lib.workload's mix, measured; only sizes the generated workload
PG_NAMES, CH_NAMES = ("runs", "approvals"), ("audit", "cost")


def build_commands(tenants: list[str], count: int, seed: int, progress: bool = False, desc: str = "") -> list[dict]:
    """`count` command envelopes of bench.lib.workload's mix."""
    runs = math.ceil(count / (COMMANDS_PER_RUN * len(tenants)) * 1.1) + 1
    steps = workload(tenants, runs, seed=seed)
    while len(steps) < count:
        runs *= 2
        steps = workload(tenants, runs, seed=seed)
    return [command_envelope(Principal(s.tenant, s.subject, s.roles), json.dumps(s.body).encode(), None, None, None)
            for s in tqdm(steps[:count], desc=desc, unit="cmd", disable=not progress, leave=False)]


async def open_projections(settings, pool, ch, prefix: str | None = None) -> dict:
    """The four projections serve runs: runs, approvals (PostgreSQL); audit, cost (ClickHouse)."""
    from projectors.approvals import ApprovalsProjection
    from projectors.audit import AuditProjection
    from projectors.cost import CostProjection
    from projectors.runs import RunsProjection

    prefix = prefix or settings.topic_prefix
    return {"runs": await RunsProjection(pool, prefix).open(),
            "approvals": await ApprovalsProjection(pool, prefix).open(),
            "audit": await AuditProjection(ch, prefix).open(),
            "cost": await CostProjection(ch, prefix).open()}
