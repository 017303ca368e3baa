"""How many tool calls each agent made of each tool lately, folded from the log.

THROTTLE and the call counts in a policy request read this. Each call counts at its envelope's
`recorded_at` (the processor's clock when it decided the command, on the chain), never at the
wall clock of whoever replays it, so a processor rebuilt from the log counts the same calls.
A call that THROTTLE itself refused does not count against the limit.
"""
import bisect
from datetime import timedelta
from typing import Any
from uuid import UUID

from schemas.envelope import iso, parse_iso

LONGEST_WINDOW_S = 86400
LAST = "\uffff"  # sorts after every call id: (t, LAST) bounds every entry at t


class CallWindows:
    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (agent, tool) → [(recorded_at, call id)]
        self.keys: dict[str, tuple[str, str]] = {}

    def track(self, env: dict[str, Any], aggregates: dict) -> None:
        if env["type"] == "tool_call.requested":
            payload = env["payload"]
            agent = payload.get("agent_id") or getattr(aggregates.get(UUID(payload["run_id"])), "agent_id", "")
            self.add((agent, payload["tool"]), env["recorded_at"], env["aggregate_id"])
        elif env["type"] == "tool_call.policy_decided" and env["payload"]["decision"] == "THROTTLE":
            self.remove(env["aggregate_id"])

    def add(self, key: tuple[str, str], at: str, call_id: str) -> None:
        times = self.times.setdefault(key, [])
        bisect.insort(times, (at, call_id))  # in chain order: almost always an append
        self.keys[call_id] = key
        horizon = iso(parse_iso(at) - timedelta(seconds=LONGEST_WINDOW_S))
        old = bisect.bisect_right(times, (horizon, LAST))
        for _, gone in times[:old]:
            self.keys.pop(gone, None)
        del times[:old]

    def remove(self, call_id: str) -> None:
        key = self.keys.pop(call_id, None)
        if key is not None:
            self.times[key] = [t for t in self.times[key] if t[1] != call_id]

    def count(self, agent: str, tool: str, now_iso: str, window_s: int) -> int:
        """Calls recorded in (now - window, now]."""
        times = self.times.get((agent, tool), [])
        since = iso(parse_iso(now_iso) - timedelta(seconds=window_s))
        return bisect.bisect_right(times, (now_iso, LAST)) - bisect.bisect_right(times, (since, LAST))
