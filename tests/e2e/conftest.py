import httpx
import pytest

from tests.support import Service, make_settings


@pytest.fixture(scope="module")
async def api():
    """`runledger serve` (API, processor, projectors) on its own topics, for one test module."""
    svc = Service(make_settings()).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


@pytest.fixture
async def http(api):
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        yield client
