"""A slow SSE subscriber is cut off with a clear final event and resumes by Last-Event-ID."""
import httpx

from tests.sse_client import messages
from tests.support import Service, command, make_settings, produce_commands, replies, token, unique, wait_until

EVENTS = 400
BIG_LABELS = {f"label-{i:02d}": "x" * 190 for i in range(32)}  # ~7 KB per event: fills socket buffers fast


async def test_a_client_that_stops_reading_is_cut_off_then_resumes_without_loss():
    settings = make_settings(sse_buffer=10)
    tenant = unique("tenant-")
    headers = {"Authorization": f"Bearer {token(tenant)}", "Last-Event-ID": "0"}
    with_service = Service(settings).start()
    try:
        await with_service.ready(90)
        sent = [command(tenant, {"type": "RequestRun", "agent_id": f"a{i}", "labels": BIG_LABELS}) for i in range(EVENTS)]
        ids: list[int] = []
        async with httpx.AsyncClient(base_url=with_service.url, timeout=60) as http:
            async with http.stream("GET", "/v1/streams/tenant", headers=headers) as response:
                assert response.status_code == 200
                await produce_commands(settings, sent)
                wanted = {c["command_id"] for c in sent}
                await wait_until(lambda: _all_replied(settings, wanted), 120, "all commands decided")
                await wait_until(lambda: _channel_head(http, tenant, EVENTS), 120, "the channels model to hold every event")
                final = None
                async for message in messages(response):
                    if message.id is not None:
                        ids.append(int(message.id))
                    elif message.event == "overflow":
                        final = message
            assert final is not None, "the slow client was never cut off"
            assert final.json["resume_after"] == ids[-1] and ids == list(range(1, len(ids) + 1))
            assert len(ids) < EVENTS
            resumed = {**headers, "Last-Event-ID": str(final.json["resume_after"])}
            async with http.stream("GET", "/v1/streams/tenant", headers=resumed) as response:
                async for message in messages(response):
                    if message.id is not None:
                        ids.append(int(message.id))
                        if len(ids) == EVENTS:
                            break
        assert ids == list(range(1, EVENTS + 1))
    finally:
        with_service.stop()


async def _all_replied(settings, wanted: set[str]) -> bool:
    return wanted <= set(await replies(settings))


async def _channel_head(http, tenant: str, n: int) -> bool:
    """True once the channels read model has applied the tenant's chain up to n."""
    async with http.stream("GET", "/v1/streams/tenant", params={"min_seq": n, "wait_ms": 0},
                           headers={"Authorization": f"Bearer {token(tenant)}"}) as response:
        return response.status_code == 200


async def test_an_id_older_than_the_channel_retains_is_announced_and_replay_resumes_at_the_oldest():
    settings = make_settings(sse_retain=20)
    tenant = unique("tenant-")
    svc = Service(settings).start()
    try:
        await svc.ready(90)
        sent = [command(tenant, {"type": "RequestRun", "agent_id": f"a{i}"}) for i in range(40)]
        await produce_commands(settings, sent)
        async with httpx.AsyncClient(base_url=svc.url, timeout=60) as http:
            await wait_until(lambda: _channel_head(http, tenant, 40), 120, "the channels model to hold every event")
            got = []
            headers = {"Authorization": f"Bearer {token(tenant)}", "Last-Event-ID": "1"}
            async with http.stream("GET", "/v1/streams/tenant", headers=headers) as response:
                async for message in messages(response):
                    if message.id is not None or message.event == "replay_incomplete":
                        got.append(message)
                    if got and got[-1].id == "40":
                        break
    finally:
        svc.stop()
    notice, events = got[0], got[1:]
    assert (notice.event, notice.json["reason"], notice.json["requested_after"]) == ("replay_incomplete", "trimmed", 1)
    first = notice.json["resumes_after"] + 1
    assert 2 < first <= 21 and [int(m.id) for m in events] == list(range(first, 41))
