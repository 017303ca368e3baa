"""What the read benchmark learns from the product's own hooks, without wrapping any of its methods.

- StoreLog: every stored poll, from ProjectorRunner.on_applied (projector, events, seconds the
  store took: admission's decode and verify plus the projection's apply).
- Statements: every chdb statement of this process, from the ClickHouse adapter's on_statement
  (kind, table or SQL head, seconds it held chdb's one-statement-at-a-time lock, seconds it waited).
- Visibility: when each probe tenant's chain_seq became visible in each read model. ProbeWatch
  feeds it from on_applied and the chain heads the runner's admission holds once the store
  returned (the moment rows and positions are readable), so chdb is never read for it.
"""
from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict


class StoreLog:
    """(wall time, projector, events, store seconds) of every poll the attached runners stored."""

    def __init__(self) -> None:
        self.polls: list[tuple[float, str, int, float]] = []

    def __call__(self, name: str, events: int, seconds: float) -> None:
        self.polls.append((time.time(), name, events, seconds))

    def attach(self, *runners) -> "StoreLog":
        for runner in runners:
            runner.on_applied.append(self)
        return self

    def of(self, name: str, t0: float = 0.0, t1: float = math.inf) -> list[tuple[float, int, float]]:
        return [(at, n, s) for at, who, n, s in self.polls if who == name and t0 <= at <= t1]


class Statements:
    """Every statement of a ClickHouse adapter while attached, labelled by kind and table (or SQL head)."""

    def __init__(self, ch, prefix: str):
        self.ch, self.prefix = ch, prefix.lower() + "_"
        self.calls: list[tuple[float, str, float, float]] = []  # (end, label, held, waited)
        ch.on_statement.append(self)

    def __call__(self, kind: str, subject: str, held: float, waited: float) -> None:
        self.calls.append((time.time(), f"{kind} {subject.replace(self.prefix, '')[:60].rstrip()}", held, waited))

    def detach(self) -> None:
        self.ch.on_statement.remove(self)

    def held(self, t0: float, t1: float = math.inf) -> tuple[int, float]:
        """(statements, seconds holding the lock) between t0 and t1."""
        calls = [c for c in self.calls if t0 <= c[0] <= t1]
        return len(calls), sum(c[2] for c in calls)

    def summary(self, t0: float, t1: float, top: int = 7) -> str:
        calls = [c for c in self.calls if t0 <= c[0] <= t1]
        by: dict[str, list[float]] = defaultdict(list)
        for _, label, held, _ in calls:
            by[label].append(held)
        held = sum(c[2] for c in calls)
        waited = sum(c[3] for c in calls) / max(1, len(calls))
        parts = [f"{label} {len(v)}× {1000 * sum(v) / len(v):.1f} ms"
                 for label, v in sorted(by.items(), key=lambda kv: -sum(kv[1]))[:top]]
        return (f"lock held {100 * held / max(1e-9, t1 - t0):.0f}% of the window, {len(calls):,} statements, "
                f"mean wait {1000 * waited:.1f} ms; " + "; ".join(parts))


class Visibility:
    """(time, chain_seq) per (read model, tenant), kept when the head moves."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], list[tuple[float, int]]] = {}

    def note(self, at: float, name: str, tenant: str, seq: int) -> None:
        history = self.seen.setdefault((name, tenant), [])
        if not history or seq > history[-1][1]:
            history.append((at, seq))

    def visible_at(self, name: str, tenant: str, seq: int) -> float:
        """When chain_seq `seq` of the tenant was first seen in that read model (inf if never)."""
        history = self.seen.get((name, tenant), [])
        i = bisect.bisect_left([s for _, s in history], seq)
        return history[i][0] if i < len(history) else math.inf


class ProbeWatch:
    """Feed Visibility from runners' on_applied: the probe tenants' heads in their admission after each store."""

    def __init__(self, visibility: Visibility, probes: list[str]):
        self.visibility, self.probes = visibility, probes

    def attach(self, runner) -> None:
        runner.on_applied.append(lambda name, _events, _seconds: self.noted(name, runner.admission.verifiers))

    def noted(self, name: str, verifiers: dict) -> None:
        at = time.time()
        for tenant in self.probes:
            if verifier := verifiers.get(tenant):
                self.visibility.note(at, name, tenant, verifier.head_seq)
