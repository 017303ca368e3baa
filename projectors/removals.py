"""What a retention sweep removes from a read model, and the record each store keeps of what it removed.

A `retention.swept` event (domain/governance.py) names the read models it governs (`stores`) and the
runs whose families it removes (domain/retention.py: a run, its tool calls and approvals, and the
costs charged to it). Each projection named there removes, as it folds the event, every row it
derived from those families, in the same apply as the rest of the poll, and writes one `removals`
row per table it removed from: (tenant, chain_seq of the sweep, record class, table, rows removed,
when the sweep was recorded). The domain guarantees that no event of a swept family follows its
sweep on the chain and that nothing a legal hold covers is in it, so removing the rows once the
poll's own rows are written is the same as removing them exactly where the sweep stands.

The sweep event itself, and every governance record (holds, policies), stays.
"""
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from projectors.base import Envelope

SWEPT = "retention.swept"


@dataclass(frozen=True)
class Sweep:
    """One sweep of one tenant, as a store needs it."""
    tenant_id: str
    chain_seq: int
    record_class: str
    run_ids: list[str]
    swept_at: str  # the sweep's recorded_at (ISO 8601)


@dataclass(frozen=True)
class Removal:
    """What one store removed from one of its tables for one sweep."""
    tenant_id: str
    chain_seq: int
    record_class: str
    table: str
    rows: int
    swept_at: datetime


def sweep_of(env: Envelope) -> Sweep:
    """The sweep an event records; raises TypeError/LookupError for a payload no store can act on."""
    p = env["payload"]
    run_ids = p["run_ids"]
    if not isinstance(run_ids, list) or not all(isinstance(r, str) for r in run_ids):
        raise TypeError(f"retention.swept run_ids must be a list of strings, not {run_ids!r}")
    if not isinstance(p["record_class"], str):
        raise TypeError(f"retention.swept record_class must be a string, not {p['record_class']!r}")
    return Sweep(env["tenant_id"], env["chain_seq"], p["record_class"], run_ids, env["recorded_at"])


def governs(store: str, env: Envelope) -> bool:
    """Whether env is a sweep that removes rows from the read model named `store`."""
    return env["type"] == SWEPT and store in env["payload"]["stores"]


def sweeps(store: str, envelopes: Iterable[Envelope]) -> list[Sweep]:
    """The sweeps among a poll's events that govern `store`, in chain order."""
    return [sweep_of(env) for env in envelopes if governs(store, env)]
