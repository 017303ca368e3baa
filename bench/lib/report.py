"""The one report table of every benchmark: measured vs target, and a verdict that never turns noise into a pass."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.measure import TOO_SHORT, Window

VERDICTS = ("pass", "MISS", "info", "n/a", TOO_SHORT)


@dataclass
class Row:
    phase: str
    metric: str
    measured: str
    target: str = "—"
    verdict: str = "info"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def info(self, phase: str, metric: str, measured: str) -> None:
        self.rows.append(Row(phase, metric, measured))

    def check(self, phase: str, metric: str, measured: str, target: str, ok: bool | None,
              window: Window | None = None) -> None:
        """A row with a verdict: pass/MISS, n/a without a value, TOO_SHORT if the window cannot tell."""
        self.rows.append(Row(phase, metric, measured, target, verdict(ok, window)))

    def rate(self, phase: str, metric: str, window: Window, minimum: float | None = None,
             detail: str = "") -> None:
        """A rate row: the rate, its window and count; a verdict only against a minimum and a measurable window."""
        measured = window.rate_text() + (f"; {detail}" if detail else "")
        if minimum is None:
            self.info(phase, metric, measured)
        else:
            self.check(phase, metric, measured, f"≥ {minimum:,.0f}/s", window.rate >= minimum, window)

    def missed(self, phase_prefix: str) -> list[Row]:
        return [r for r in self.rows if r.phase.startswith(phase_prefix) and r.verdict == "MISS"]

    def table(self) -> str:
        header = ("phase", "metric", "measured", "target", "verdict")
        cells = [header] + [(r.phase, r.metric, r.measured, r.target, r.verdict) for r in self.rows]
        widths = [max(len(str(row[i])) for row in cells) for i in range(5)]
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
        return "\n".join([lines[0], sep] + lines[1:])

    def write_json(self, path: Path, **extra: Any) -> None:
        body = {**extra, "rows": [asdict(r) for r in self.rows], "notes": self.notes,
                "errors": self.errors, "data": self.data}
        path.write_text(json.dumps(body, indent=2, default=str))


def verdict(ok: bool | None, window: Window | None = None) -> str:
    if window is not None and not window.measurable:
        return TOO_SHORT
    return "n/a" if ok is None else ("pass" if ok else "MISS")
