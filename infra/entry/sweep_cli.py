"""`runledger retention sweep`: ask the processor to sweep a tenant, batch after batch, with progress.

Each batch is a SweepRetention command, decided in chain order against the tenant's holds, so a
hold placed while the sweep runs keeps what it covers from the next batch on.
"""
import httpx
from tqdm import tqdm

from infra.adapters.http.auth import mint
from infra.adapters.settings import Settings
from infra.entry.client import LedgerClient


class SweepFailed(Exception):
    pass


async def sweep(settings: Settings, url: str, tenant: str, record_class: str, batch: int,
                progress: bool) -> str:
    """Send batches until the processor says nothing is left; return a one-line summary."""
    token = mint(settings.jwt_secret.get_secret_value(), tenant, "runledger-cli:retention", ["admin"],
                 settings.jwt_audience, 600)
    body = {"type": "SweepRetention", "record_class": record_class, "limit": batch}
    runs = events = sweeps = 0
    kept = ""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        client = LedgerClient(http, token)
        with tqdm(unit="run", desc=f"sweeping {record_class} of {tenant}", disable=not progress) as bar:
            while True:
                outcome = await client.send(body)
                if outcome.body.get("code") == "nothing_to_sweep":
                    kept = outcome.body["reason"].partition("; ")[2]
                    break
                if not outcome.accepted:
                    raise SweepFailed(f"sweep of {record_class} records of tenant {tenant} refused after "
                                      f"{sweeps} batches ({outcome.status_code} {outcome.body.get('code')}): "
                                      f"{outcome.body.get('reason')}")
                swept = await counts_of(http, token, outcome.body["events"][-1]["chain_seq"])
                sweeps, runs, events = sweeps + 1, runs + swept["runs"], events + swept["events"]
                bar.update(swept["runs"])
    summary = f"swept {record_class} records of tenant {tenant}: {runs} runs, {events} events in {sweeps} sweeps"
    return f"{summary}; {kept}" if kept else summary


async def counts_of(http: httpx.AsyncClient, token: str, chain_seq: int) -> dict[str, int]:
    """What the sweep recorded at chain_seq removed, read back once the governance model has it."""
    response = await http.get("/v1/retention/sweeps", params={"limit": 1, "min_seq": chain_seq, "wait_ms": 10000},
                              headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        raise SweepFailed(f"the sweep at chain_seq {chain_seq} was recorded, but reading it back failed "
                          f"({response.status_code}): {response.text[:300]}")
    item = response.json()["items"][0]
    return item["counts"]
