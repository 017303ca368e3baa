"""What the chain says the row-per-event read models hold: audit, evidence, SSE channels and the archive (pure).

Each function reads a tenant's events in chain order and yields `Expected` rows in key order, built
by the projector's own row functions where it has them (`AuditProjection.row`, `leaf_row`,
`checkpoint_row`, `channels_of`), so a verification and a projector can never disagree about what a
row is, only about whether the table holds it. `applied` is how far the model has applied the
chain: rows of later events are optional. `swept` maps each run a retention sweep of the model has
removed (projectors/removals.py) to that sweep's chain_seq: the rows of its family must be gone.
"""
import bisect
from typing import Iterable, Iterator

from projectors.archive_files import run_of
from projectors.audit import AuditProjection
from projectors.base import Envelope
from projectors.ch import ts
from projectors.channels import channels_of
from projectors.evidence import CHECKPOINT_SIGNED, checkpoint_row, leaf_row
from projectors.removals import governs
from projectors.verification import Expected, Presence
from schemas.bundle import jcs
from schemas.tiles import HEIGHT, STORE as ARCHIVE_STORE, tombstone

REQUESTED = ("tool_call.requested", "approval.requested")
AUDIT_RUN_ID = 14  # index of run_id in projectors/audit.py COLUMNS
CHANNELS_STORE = "channels"


def swept_runs(store: str, envelopes: Iterable[Envelope], applied: int) -> dict[str, int]:
    """Run id → chain_seq of the sweep (applied by the model) that removed its family from `store`."""
    found: dict[str, int] = {}
    for env in envelopes:
        if env["chain_seq"] <= applied and governs(store, env):
            found.update({run_id: env["chain_seq"] for run_id in env["payload"]["run_ids"]})
    return found


def presence(seq: int, applied: int, removed_by: int | None) -> Presence:
    if seq > applied:
        return "optional"
    return "absent" if removed_by is not None else "required"


def by_sweep(seq: int | None) -> str:
    return f"the retention sweep at chain_seq {seq} removed it" if seq else ""


# -- audit -------------------------------------------------------------------------------------

def audit_expected(envelopes: Iterable[Envelope], applied: int, swept: dict[str, int]) -> Iterator[Expected]:
    """One row per event (every column, as the projector writes it), absent where a sweep removed its run."""
    parents: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for env in envelopes:
        if env["type"] in REQUESTED:
            p = env["payload"]
            parents[(env["tenant_id"], env["aggregate_id"])] = (p.get("run_id"), p.get("tool"))
        row = AuditProjection.row(env, parents)
        removed_by = swept.get(row[AUDIT_RUN_ID])
        seq = env["chain_seq"]
        yield Expected((seq,), row, presence(seq, applied, removed_by), by_sweep(removed_by))


# -- evidence ----------------------------------------------------------------------------------

def leaves_expected(envelopes: Iterable[Envelope], applied: int) -> Iterator[Expected]:
    """One leaf per event, never swept: the 32 bytes of its hash."""
    for env in envelopes:
        yield Expected((env["chain_seq"],), (leaf_row(env)[2],), presence(env["chain_seq"], applied, None))


def checkpoints_expected(envelopes: Iterable[Envelope], applied: int) -> Iterator[Expected]:
    """One row per checkpoint.signed that holds together (one that does not holds the tenant instead)."""
    for env in envelopes:
        if env["type"] == CHECKPOINT_SIGNED:
            try:
                row = checkpoint_row(env)
            except ValueError:
                continue
            yield Expected((env["chain_seq"],), (*row[2:7], ts(row[7])), presence(env["chain_seq"], applied, None))


# -- SSE channels ------------------------------------------------------------------------------

class ChannelPlan:
    """Which channels each event goes to (as projectors/channels.py places it), and each channel's length."""

    def __init__(self, applied: int, swept: dict[str, int]):
        self.applied, self.swept = applied, swept
        self.runs: dict[str, str] = {}  # aggregate id → run id
        self.counts: dict[str, int] = {}  # channel → events up to `applied`

    def channels(self, env: Envelope) -> list[str]:
        if env["type"] in REQUESTED:
            self.runs[env["aggregate_id"]] = env["payload"]["run_id"]
        run_id = env["aggregate_id"] if env["aggregate_type"] == "run" else self.runs.get(env["aggregate_id"])
        return sorted(channels_of(env, run_id))

    def family(self, env: Envelope) -> str | None:
        """The run whose family the event belongs to, for a sweep (its cost too), or None."""
        if env["type"] == "budget.cost_recorded":
            return env["payload"].get("run_id")
        return env["aggregate_id"] if env["aggregate_type"] == "run" else self.runs.get(env["aggregate_id"])

    def removed_by(self, env: Envelope, channel: str) -> int | None:
        if channel.startswith("run:"):
            return self.swept.get(channel[4:])
        return self.swept.get(self.family(env))

    def count(self, envelopes: Iterable[Envelope]) -> "ChannelPlan":
        for env in envelopes:
            if env["chain_seq"] <= self.applied:
                for channel in self.channels(env):
                    self.counts[channel] = self.counts.get(channel, 0) + 1
        self.runs.clear()
        return self

    def trimmed_below(self, oldest: dict[str, int], retain: int) -> dict[str, int]:
        """Per channel, the seq below which rows may be trimmed: never into its newest `retain` events."""
        return {c: min(oldest.get(c, 1), max(1, n - retain + 1)) for c, n in self.counts.items()}


def channel_events_expected(envelopes: Iterable[Envelope], plan: ChannelPlan,
                            trimmed_below: dict[str, int]) -> Iterator[Expected]:
    """(chain_seq, channel) → (seq, type, hash, re-hashes) per copy of each event, in chain order."""
    seqs: dict[str, int] = {}
    for env in envelopes:
        for channel in plan.channels(env):
            seq = seqs[channel] = seqs.get(channel, 0) + 1
            removed_by = plan.removed_by(env, channel)
            kind = presence(env["chain_seq"], plan.applied, removed_by)
            if kind == "required" and seq < trimmed_below.get(channel, 1):
                kind = "optional"
            yield Expected((env["chain_seq"], channel), (seq, env["type"], env["hash"], True), kind,
                           by_sweep(removed_by))


def channel_heads_expected(plan: ChannelPlan) -> list[Expected]:
    return [Expected((channel,), (n,)) for channel, n in sorted(plan.counts.items())]


def aggregate_runs_expected(envelopes: Iterable[Envelope], applied: int, swept: dict[str, int]) -> list[Expected]:
    """Tool call or approval id → its run, as the channels model remembers it until a sweep removes the run."""
    rows = {}
    for env in envelopes:
        if env["type"] in REQUESTED:
            run_id = env["payload"]["run_id"]
            removed_by = swept.get(run_id)
            rows[env["aggregate_id"]] = Expected((env["aggregate_id"],), (run_id,),
                                                 presence(env["chain_seq"], applied, removed_by), by_sweep(removed_by))
    return [rows[k] for k in sorted(rows)]


# -- archive -----------------------------------------------------------------------------------

class ArchivePlan:
    """What the chain says a tenant's archive (projectors/archive.py) publishes once it has applied chain_seq 1
    to `applied`: the sweeps naming the archive, the checkpoints, and how many entries its files must hold."""

    def __init__(self, applied: int):
        self.applied = applied
        self.sweeps: dict[str, list[int]] = {}  # run id → chain_seqs of the sweeps naming the archive that name it
        self.checkpoints: list[tuple[int, int, bytes]] = []  # (chain_seq, size, note) that hold together
        self.keys: dict[str, None] = {}  # the vkeys of those checkpoints, in chain order

    def count(self, envelopes: Iterable[Envelope]) -> "ArchivePlan":
        for env in envelopes:
            if governs(ARCHIVE_STORE, env):
                for run_id in env["payload"]["run_ids"]:
                    self.sweeps.setdefault(run_id, []).append(env["chain_seq"])
            elif env["type"] == CHECKPOINT_SIGNED:
                try:
                    row = checkpoint_row(env)  # one that does not hold together holds the tenant instead
                except ValueError:
                    continue
                self.checkpoints.append((row[1], row[3], row[5].encode()))
                self.keys[row[6]] = None
        return self

    @property
    def checkpoint(self) -> tuple[int, int, bytes] | None:
        """The checkpoint `checkpoint` publishes at the head: the first of the largest size the archive applied."""
        best = None
        for c in self.checkpoints:
            if c[0] <= self.applied and (best is None or c[1] > best[1]):
                best = c
        return best

    @property
    def published(self) -> int:
        """Entries the public files hold at the head: every full bundle, and up to the published checkpoint."""
        signed = self.checkpoint
        return max(self.applied >> HEIGHT << HEIGHT, signed[1] if signed else 0)

    def note(self, note: bytes) -> tuple[int, int] | None:
        """(chain_seq, size) of the checkpoint.signed whose note this is, if one is."""
        return next(((seq, size) for seq, size, n in self.checkpoints if n == note), None)

    def removed_by(self, seq: int, run_id: str | None) -> int | None:
        """The first sweep after chain_seq `seq` that names the event's run: it tombstones the event's line."""
        sweeps = self.sweeps.get(run_id) if run_id is not None else None
        if not sweeps:
            return None
        at = bisect.bisect_right(sweeps, seq)
        return sweeps[at] if at < len(sweeps) else None


def archive_lines(envelopes: Iterable[Envelope], plan: ArchivePlan) -> Iterator[tuple[Envelope, bytes, bytes | None]]:
    """Each event with its sidecar line at the head, as the projector writes it (RFC 8785 JSON and a newline, or
    the tombstone of the sweep that removed its run family), and the tombstone a sweep past the head will make
    of it (which a poll in progress may have written already), if one will. Families as projectors/archive.py
    `run_of` decides them."""
    owner: dict[str, str] = {}
    for env in envelopes:
        seq = env["chain_seq"]
        by = plan.removed_by(seq, run_of(env, owner))
        if by is None:
            yield env, jcs(env) + b"\n", None
        elif by <= plan.applied:
            yield env, tombstone(seq, env["hash"], by), None
        else:
            yield env, jcs(env) + b"\n", tombstone(seq, env["hash"], by)
