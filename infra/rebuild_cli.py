"""`runledger projector rebuild`: directly against the store, or through the serving process's ops API."""
import asyncio

import httpx
from tqdm import tqdm

from commands.auth import mint
from infra.settings import Settings


class RebuildFailed(Exception):
    pass


def bar(name: str) -> tqdm:
    return tqdm(unit="ev", unit_scale=True, desc=f"rebuilding {name}")


def show(progress: tqdm, done: int, total: int) -> None:
    progress.total = total
    progress.update(done - progress.n)


async def direct(settings: Settings, name: str, swap: bool) -> str:
    from infra.bootstrap import CLICKHOUSE_PROJECTIONS, POSTGRES_PROJECTIONS
    from infra.clickhouse import open_clickhouse
    from infra.postgres import open_pool
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


async def via_api(settings: Settings, name: str, url: str) -> str:
    token = mint(settings.jwt_secret.get_secret_value(), settings.ops_tenant, "cli", ["admin"], settings.jwt_audience)
    headers = {"Authorization": f"Bearer {token}"}
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
