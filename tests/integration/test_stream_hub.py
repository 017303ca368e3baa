"""The SSE hub on the real database: it stops promptly even while notifications pour in."""
import asyncio
import json

import psycopg

from infra.adapters.postgres import open_pool
from projectors.channels import NOTIFY_CHANNEL
from streams.hub import ChannelHub
from tests.support import DATABASE_URL, make_settings, wait_until

NOTE = json.dumps({"schema": "unused", "channels": []})


async def flood(stop_flooding: asyncio.Event) -> None:
    """NOTIFY in bursts (several notifications per packet) until told to stop."""
    async with await psycopg.AsyncConnection.connect(DATABASE_URL, autocommit=True) as conn:
        while not stop_flooding.is_set():
            async with conn.transaction():
                for _ in range(20):
                    await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, NOTE))
            await asyncio.sleep(0)  # let the hub run between bursts


async def test_hub_stops_while_notifications_keep_arriving():
    # Given a hub following the NOTIFY channel while bursts of notifications keep arriving
    settings = make_settings()
    pool = await open_pool(settings)
    hub = ChannelHub(DATABASE_URL, pool, settings.topic_prefix)
    received = []
    stop, stop_flooding = asyncio.Event(), asyncio.Event()
    dispatch = hub.dispatch

    async def counting(note):
        received.append(note)
        if len(received) == 500:
            stop.set()  # the shutdown signal lands while a notification is being dispatched
        await dispatch(note)
    hub.dispatch = counting
    hub_task = asyncio.create_task(hub.run(stop))
    flooder = asyncio.create_task(flood(stop_flooding))
    try:
        # When it is told to stop in the middle of the flood (by the 500th notification)
        await wait_until(stop.is_set, timeout_s=30, what="the hub to receive 500 notifications")
        finished, _ = await asyncio.wait({hub_task}, timeout=10)
        # Then it returns, instead of deadlocking on its LISTEN connection's lock
        assert hub_task in finished, "the hub did not stop within 10 s of being asked to"
        assert hub_task.exception() is None
    finally:
        stop_flooding.set()
        await flooder
        hub_task.cancel()
        await pool.close()
