"""What verifying a read model against the chain finds, and the pure comparison that finds it.

A check sets what the chain says a table should hold (`Expected` rows, in key order) beside what
the table holds (`Live` rows, in the same order) and merges them (`diff`). Each expected row is
`required` (applied by the model, so it must be there), `optional` (not applied yet, or trimmed
from an SSE channel: it may be absent, and must be right if present) or `absent` (removed by a
retention sweep the model has applied: it must be gone); `also` is another row it may hold instead
(the archive's: the tombstone of a sweep past its head, which a poll in progress writes before its
position). What differs is a `Problem` named by model, table and key (a chain_seq or the row's key
columns) with the columns that differ, never their values, so a problem is itself fit for the chain
(`verification.recorded`).
"""
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable, Literal

Key = tuple
Presence = Literal["required", "optional", "absent"]
Kind = Literal["missing", "extra", "mismatched", "held", "skipped", "schema"]
KEPT = 200  # problems kept per model (all are counted)
RECORDED = 20  # problems of a tenant written into its verification.recorded
TICK = 1000  # rows between progress reports


@dataclass(frozen=True)
class Expected:
    key: Key
    row: tuple | None  # None for an absent row (no need to build it)
    presence: Presence = "required"
    why: str = ""  # for an absent row: what removed it
    also: tuple | None = None  # another row the model may hold here: what a write past its head makes


@dataclass(frozen=True)
class Live:
    key: Key
    row: tuple
    flaw: str = ""  # what is wrong with the row on its own (it does not re-hash), found by the reader


@dataclass(frozen=True)
class Problem:
    model: str
    table: str
    key: dict[str, str | int]
    kind: Kind
    columns: tuple[str, ...] = ()
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns)}

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Problem":
        return cls(d["model"], d["table"], d["key"], d["kind"], tuple(d["columns"]), d["detail"])

    def place(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.key.items())


@dataclass
class ModelVerdict:
    """One read model of one tenant: rows read, what is wrong, and how far it has applied the chain."""
    model: str
    rows: int = 0
    missing: int = 0
    extra: int = 0
    mismatched: int = 0
    applied: int = 0
    stopped_at: int | None = None  # the first chain_seq the model should have applied and has not
    problems: list[Problem] = field(default_factory=list)
    dropped: int = 0  # problems counted but not kept
    tick: Callable[[int], None] | None = field(default=None, repr=False, compare=False)  # rows read so far

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.mismatched or self.stopped_at or self.problems)

    def add(self, problem: Problem) -> None:
        if problem.kind in ("missing", "extra", "mismatched"):
            setattr(self, problem.kind, getattr(self, problem.kind) + 1)
        if len(self.problems) < KEPT:
            self.problems.append(problem)
        else:
            self.dropped += 1

    def counts(self) -> dict[str, Any]:
        return {"rows": self.rows, "missing": self.missing, "extra": self.extra, "mismatched": self.mismatched,
                "applied": self.applied, "stopped_at": self.stopped_at, "ok": self.ok}

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.counts(), "problems": [p.as_dict() for p in self.problems],
                "dropped": self.dropped}

    @classmethod
    def of(cls, d: dict[str, Any]) -> "ModelVerdict":
        return cls(d["model"], d["rows"], d["missing"], d["extra"], d["mismatched"], d["applied"], d["stopped_at"],
                   [Problem.of(p) for p in d["problems"]], d["dropped"])


@dataclass
class TenantReport:
    tenant_id: str
    chain_size: int  # events of the chain as read (its verified prefix, if it is broken)
    models: dict[str, ModelVerdict] = field(default_factory=dict)
    chain_problem: str | None = None  # the log itself does not verify (runledger verify names where)

    @property
    def ok(self) -> bool:
        return self.chain_problem is None and all(v.ok for v in self.models.values())

    def problems(self) -> list[Problem]:
        return [p for v in self.models.values() for p in v.problems]

    def as_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "chain_size": self.chain_size, "chain_problem": self.chain_problem,
                "models": {name: v.as_dict() for name, v in self.models.items()}}

    @classmethod
    def of(cls, d: dict[str, Any]) -> "TenantReport":
        return cls(d["tenant_id"], d["chain_size"], {n: ModelVerdict.of(v) for n, v in d["models"].items()},
                   d["chain_problem"])


def key_of(names: tuple[str, ...], key: Key) -> dict[str, str | int]:
    return {n: v if isinstance(v, int) else str(v) for n, v in zip(names, key)}


def differing(columns: tuple[str, ...], want: tuple, got: tuple) -> tuple[str, ...]:
    return tuple(c for c, w, g in zip(columns, want, got) if w != g)


class Diff:
    """Merge one table's expected and live rows (both in ascending key order) into a verdict."""

    def __init__(self, verdict: ModelVerdict, table: str, key_names: tuple[str, ...], columns: tuple[str, ...]):
        self.verdict, self.table, self.key_names, self.columns = verdict, table, key_names, columns

    def problem(self, key: Key, kind: Kind, columns: tuple[str, ...] = (), detail: str = "") -> None:
        self.verdict.add(Problem(self.verdict.model, self.table, key_of(self.key_names, key), kind, columns, detail))

    async def run(self, expected: Iterable[Expected] | AsyncIterable[Expected],
                  live: Iterable[Live] | AsyncIterable[Live]) -> None:
        async for want, got in merged(expected, live):
            if got is not None:
                self.verdict.rows += 1
                if self.verdict.tick and self.verdict.rows % TICK == 0:
                    self.verdict.tick(self.verdict.rows)
            self.judge(want, got)

    def judge(self, want: Expected | None, got: Live | None) -> None:
        if got is None:
            if want.presence == "required":
                self.problem(want.key, "missing", detail="the chain has this row; the read model does not")
        elif want is None:
            self.problem(got.key, "extra", detail="no event of the chain makes this row")
        elif want.presence == "absent":
            self.problem(got.key, "extra", detail=f"still here after {want.why}")
        elif got.flaw or (want.row != got.row and got.row != want.also):
            columns = differing(self.columns, want.row, got.row)
            self.problem(got.key, "mismatched", columns, got.flaw or f"differs from the chain in {', '.join(columns)}")


async def merged(expected, live) -> AsyncIterator[tuple[Expected | None, Live | None]]:
    """Pair rows of equal keys; a key on one side only is paired with None. Refuses input out of key order."""
    wants, gots = ordered(expected), ordered(live)
    want, got = await anext(wants, None), await anext(gots, None)
    while want is not None or got is not None:
        if got is None or (want is not None and want.key < got.key):
            yield want, None
            want = await anext(wants, None)
        elif want is None or got.key < want.key:
            yield None, got
            got = await anext(gots, None)
        else:
            yield want, got
            want, got = await anext(wants, None), await anext(gots, None)


async def each(rows: Iterable | AsyncIterable) -> AsyncIterator:
    if hasattr(rows, "__aiter__"):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row


async def ordered(rows: Iterable | AsyncIterable) -> AsyncIterator:
    """The rows, checked to come in strictly ascending key order (a merge of unordered input would lie)."""
    last = None
    async for row in each(rows):
        if last is not None and not last < row.key:
            raise ValueError(f"rows out of key order: {row.key!r} after {last!r}")
        last = row.key
        yield row
