"""Phase 1b: the processor's per-command CPU work without Kafka, in this process: one core's ceiling.

Decide (TenantLedger.execute), seal (the hash chain), encode the event record and its CloudEvents
headers, encode the reply, for the same command mix as phase 1.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

from bench.lib.measure import Window


def phase_decide(envelopes: list[dict]) -> tuple[Window, int]:
    """Return (events over the seconds it took, commands)."""
    from domain.ledger import TenantLedger
    from schemas.envelope import cloudevents_headers, encode, encode_json

    ledgers: dict[str, TenantLedger] = {}
    events = 0
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for command in envelopes:
        tenant = command["tenant_id"]
        ledger = ledgers.get(tenant) or ledgers.setdefault(tenant, TenantLedger(tenant))
        reply, sealed = ledger.execute(command, now)
        for env in sealed:
            encode(env)
            cloudevents_headers(env)
        encode_json(reply)
        events += len(sealed)
    return Window(events, time.perf_counter() - started), len(envelopes)
