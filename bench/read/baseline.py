"""Phase 2: the same events read with a bare aiokafka consumer and decoded, then also chain-verified: no sink.

The ceiling of any projector that reads, decodes and verifies in Python on this machine; the
verify pass uses the projectors' own admission checks (projectors.admit: decode, type, chain).
"""
from __future__ import annotations

from bench.lib.measure import Window
from bench.lib.topics import timed_read


class Verify:
    """Decode and verify each record as admission does, one chain per tenant; count what fails."""

    def __init__(self) -> None:
        from schemas.chain import ChainVerifier
        self.verifier_cls = ChainVerifier
        self.heads: dict[str, ChainVerifier] = {}
        self.problems: list[str] = []

    def __call__(self, record) -> None:
        from projectors.admit import decoded, problem_of
        env, problem = decoded(record.value)
        if problem:
            self.problems.append(problem)
            return
        tenant = env["tenant_id"]
        verifier = self.heads.get(tenant) or self.heads.setdefault(tenant, self.verifier_cls(tenant))
        if problem := problem_of(env, verifier):
            self.problems.append(problem)
        else:
            verifier.accept(env)


async def baselines(args, settings, report) -> int:
    from schemas.envelope import decode

    size = [0]

    def decoded(record) -> None:
        decode(record.value)
        size[0] += len(record.value)
    count, raw_s = await timed_read(settings, settings.events_topic, decoded, "read + decode", args.progress)
    verify = Verify()
    _, verify_s = await timed_read(settings, settings.events_topic, verify, "read + decode + verify", args.progress)
    if verify.problems:
        report.errors.append(f"baseline: {len(verify.problems)} events failed verification: {verify.problems[:3]}")
    report.rate("baseline", "raw aiokafka read + decode (events/s)", Window(count, raw_s),
                detail=f"{size[0] / max(1, count):,.0f} B/event")
    report.rate("baseline", "… + chain verify, as projectors.admit does (events/s)", Window(count, verify_s),
                detail="no sink")
    return count
