"""Verify a tenant's hash chain, naming the first bad event and why."""
from dataclasses import dataclass
from typing import Any, Iterable

from schemas.envelope import GENESIS_HASH, compute_hash


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    count: int
    head_hash: str
    bad_seq: int | None = None
    problem: str | None = None


class ChainVerifier:
    """Check envelopes one at a time, in log order, for one tenant."""

    def __init__(self, tenant_id: str, head_seq: int = 0, head_hash: str = GENESIS_HASH):
        self.tenant_id = tenant_id
        self.head_seq = head_seq
        self.head_hash = head_hash

    def problem_with(self, env: dict[str, Any]) -> str | None:
        """Return why env cannot follow the current head, or None if it can."""
        seq = env.get("chain_seq")
        if env.get("tenant_id") != self.tenant_id:
            return f"tenant_id is {env.get('tenant_id')!r}, expected {self.tenant_id!r}"
        if seq != self.head_seq + 1:
            kind = "duplicate or out of order" if isinstance(seq, int) and seq <= self.head_seq else "gap"
            return f"chain_seq {seq} follows {self.head_seq} ({kind})"
        if env.get("prev_hash") != self.head_hash:
            return f"prev_hash {env.get('prev_hash')} does not match the hash of chain_seq {self.head_seq} ({self.head_hash})"
        actual = compute_hash(env)
        if env.get("hash") != actual:
            return f"hash {env.get('hash')} does not match the envelope's content (computed {actual})"
        return None

    def accept(self, env: dict[str, Any]) -> None:
        self.head_seq = env["chain_seq"]
        self.head_hash = env["hash"]

    def feed(self, env: dict[str, Any]) -> ChainVerdict | None:
        """Accept env if it continues the chain; otherwise return the failing verdict."""
        problem = self.problem_with(env)
        if problem:
            return ChainVerdict(False, self.head_seq, self.head_hash,
                                bad_seq=self.head_seq + 1, problem=problem)
        self.accept(env)
        return None

    def verdict(self) -> ChainVerdict:
        return ChainVerdict(True, self.head_seq, self.head_hash)


def verify_chain(tenant_id: str, envelopes: Iterable[dict[str, Any]]) -> ChainVerdict:
    """Verify a whole chain from genesis."""
    verifier = ChainVerifier(tenant_id)
    for env in envelopes:
        if failed := verifier.feed(env):
            return failed
    return verifier.verdict()
