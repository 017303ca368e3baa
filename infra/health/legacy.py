"""The flat health keys /healthz has always had (each role's state, held tenants), beside the structured report."""
from commands.processor import CommandProcessor
from projectors.runner import ProjectorRunner


def health(processor: CommandProcessor | None, runners: list[ProjectorRunner], detail: bool = False) -> dict:
    """Each role's state; held tenants by id and place. Reasons (which may quote an event) only with detail."""
    report: dict = {}
    if processor:
        report.update({"processor": "ok" if processor.healthy else "failed",
                       "owned_partitions": sorted(processor.owners),
                       "broken_partitions": processor.broken if detail else sorted(processor.broken), **processor.stats})
    for runner in runners:
        name = f"projector:{runner.projection.name}"
        held = runner.admission.held
        report[name] = ("failed" if runner.failed else "retrying" if runner.last_error
                        else "degraded" if held else "ok")
        if held:
            report[f"{name}:held"] = [{"tenant_id": h.tenant_id, "partition": h.partition, "chain_seq": h.chain_seq,
                                       **({"reason": h.reason} if detail else {})}
                                      for h in sorted(held.values(), key=lambda h: h.tenant_id)]
        if detail and (runner.failed or runner.last_error):
            report[f"{name}:reason"] = runner.failed or runner.last_error
    return report

