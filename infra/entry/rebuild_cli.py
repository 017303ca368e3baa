"""`runledger projector rebuild`: directly against the store, or through the serving process's ops API."""
import asyncio

import httpx
from tqdm import tqdm

from infra.adapters.http.auth import mint
from infra.adapters.settings import Settings


class RebuildFailed(Exception):
    pass


def bar(name: str) -> tqdm:
    return tqdm(unit="ev", unit_scale=True, desc=f"rebuilding {name}")


def show(progress: tqdm, done: int, total: int) -> None:
    progress.total = total
    progress.update(done - progress.n)


async def direct(settings: Settings, name: str, swap: bool) -> str:
    from infra.entry.bootstrap import CLICKHOUSE_PROJECTIONS, POSTGRES_PROJECTIONS
    from infra.adapters.clickhouse import open_clickhouse
    from infra.adapters.postgres import open_pool
    from projectors.rebuild import rebuild
    pg = {cls.name: cls for cls in POSTGRES_PROJECTIONS}
    store = await open_pool(settings) if name in pg else open_clickhouse(settings.clickhouse_url, settings.chdb_path)
    try:
        cls = pg.get(name) or {c.name: c for c in CLICKHOUSE_PROJECTIONS}[name]
        live = await cls(store, settings.topic_prefix).open()
        with bar(name) as progress:
            target, applied = await rebuild(settings, live, lambda d, t: show(progress, d, t), go_live=swap)
    finally:
        await store.close() if name in pg else store.close()
    where = getattr(target, "schema", None) or target.db
    return f"rebuilt {name}: {applied} events replayed into {where} ({'now live' if swap else 'not swapped in'})"


def ops_headers(settings: Settings) -> dict[str, str]:
    token = mint(settings.jwt_secret.get_secret_value(), settings.ops_tenant, "cli", ["admin"], settings.jwt_audience)
    return {"Authorization": f"Bearer {token}"}


async def resume_via_api(settings: Settings, name: str, tenant: str, url: str) -> str:
    """Ask the serving process to replay a held tenant of one read model."""
    async with httpx.AsyncClient(base_url=url, headers=ops_headers(settings), timeout=30) as http:
        try:
            answer = await http.post(f"/v1/ops/projectors/{name}/tenants/{tenant}/resume")
        except httpx.ConnectError:
            raise RebuildFailed(f"cannot reach the runledger API at {url}; start it (or pass --url)") from None
    if answer.status_code != 202:
        raise RebuildFailed(f"{answer.status_code} {answer.json().get('reason', answer.text)}")
    return (f"asked {name} to replay tenant {tenant}; it leaves the held list of "
            f"GET /v1/ops/projectors once caught up")


async def via_api(settings: Settings, name: str, url: str) -> str:
    headers = ops_headers(settings)
    path = f"/v1/ops/projectors/{name}/rebuild"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        try:
            started = await http.post(path)
        except httpx.ConnectError:
            raise RebuildFailed(f"cannot reach the runledger API at {url}; the {name} model lives in the "
                                f"embedded engine of that process, so start it (or pass --url)") from None
        if started.status_code != 202:
            raise RebuildFailed(f"{started.status_code} {started.json().get('reason', started.text)}")
        with bar(name) as progress:
            while (job := (await http.get(path)).json())["state"] == "running":
                show(progress, job["done"], job["total"])
                await asyncio.sleep(0.5)
            show(progress, job["done"], job["total"])
    if job["state"] != "done":
        raise RebuildFailed(f"the rebuild of {name} failed in the server: {job['error']}")
    return f"rebuilt {name}: {job['applied']} events replayed into generation {job['generation']} (now live)"
