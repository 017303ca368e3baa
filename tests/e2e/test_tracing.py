"""One command, one trace: a running `runledger serve` exports over OTLP/HTTP (by the standard OTEL_* variables)
to a receiver in this process, and the command's context travels in the `traceparent` headers of both topics.

The trace asserted: the HTTP request span → `send <prefix>.commands` (PRODUCER) ← linked from the processor's
`process <prefix>.commands` (CONSUMER) with its decide, `send <prefix>.events` and commit children; ← linked
from every projector's `process <prefix>.events` with its store child, and from the SSE delivery.
"""
import asyncio
import json

import httpx
import pytest

from infra.entry.bootstrap import CLICKHOUSE_PROJECTIONS, POSTGRES_PROJECTIONS
from tests.otlp_receiver import HttpReceiver, Span
from tests.sse_client import messages
from tests.support import Service, make_settings, read_topic, token, unique, wait_until


class TracedService(Service):
    """The service with only the OTEL_* variables given here (none inherited: traffic stays on loopback)."""

    def __init__(self, settings, otel: dict[str, str]):
        super().__init__(settings)
        self.otel = otel

    def env(self) -> dict[str, str]:
        return {**{k: v for k, v in super().env().items() if not k.startswith("OTEL_")}, **self.otel}


@pytest.fixture(scope="module")
async def traced():
    with HttpReceiver() as otlp:
        settings = make_settings()
        svc = TracedService(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                                       "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                       "OTEL_SERVICE_NAME": f"runledger-{settings.topic_prefix}",
                                       "OTEL_BSP_SCHEDULE_DELAY": "100"}).start()
        try:
            await svc.ready(90)
            yield svc, otlp
        finally:
            svc.stop()


def header(record, name: str = "traceparent") -> str | None:
    return next((v.decode() for k, v in record.headers or () if k == name), None)


async def send(svc, tenant: str) -> dict:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        response = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "traced"},
                                   headers={"Authorization": f"Bearer {token(tenant)}"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_commands_records_on_both_topics_carry_one_trace_in_their_traceparent_header(traced):
    svc, _ = traced
    tenant = unique("tenant-")
    outcome = await send(svc, tenant)
    s = svc.settings
    [cmd] = [r for r in await read_topic(s, s.commands_topic) if json.loads(r.value)["tenant_id"] == tenant]
    events = [r for r in await read_topic(s, s.events_topic) if json.loads(r.value)["tenant_id"] == tenant]
    assert [json.loads(r.value)["event_id"] for r in events] == [e["event_id"] for e in outcome["events"]]
    headers = [header(cmd)] + [header(r) for r in events]
    assert all(h is not None and len(h.split("-")) == 4 for h in headers), headers
    assert len({h.split("-")[1] for h in headers}) == 1 and headers[0].split("-")[1] != "0" * 32
    # the envelope holds the same context as the header (the event's header is its envelope's, on the chain)
    assert [json.loads(r.value)["traceparent"] for r in [cmd] + events] == headers


def spans_named(spans: list[Span], name: str, **attributes) -> list[Span]:
    return [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())]


def linked_to(spans: list[Span], target: Span) -> list[Span]:
    return [s for s in spans if any((l.trace_id, l.span_id) == (target.trace_id, target.span_id) for l in s.links)]


def children(spans: list[Span], parent: Span) -> dict[str, Span]:
    return {s.name: s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id}


async def test_one_command_is_one_trace_from_http_through_the_processor_to_every_projector_and_sse(traced):
    svc, otlp = traced
    s, tenant = svc.settings, unique("tenant-")
    projectors = {f"{s.topic_prefix}.projector.{cls.name}" for cls in POSTGRES_PROJECTIONS + CLICKHOUSE_PROJECTIONS}
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        async with http.stream("GET", "/v1/streams/tenant",
                               headers={"Authorization": f"Bearer {token(tenant, 'watcher')}"}) as stream:
            frames = messages(stream).__aiter__()
            assert (await anext(frames)).comments == ["runledger stream"]  # subscribed
            outcome = await send(svc, tenant)
            delivered = await asyncio.wait_for(anext(frames), 30)
    assert delivered.id == "1" and delivered.json["event_id"] == outcome["events"][0]["event_id"]

    def whole() -> dict | None:
        spans = otlp.snapshot()
        sends = spans_named(spans, f"send {s.commands_topic}", **{"runledger.command_id": outcome["command_id"]})
        if not sends:
            return None
        process = [p for p in linked_to(spans_named(spans, f"process {s.commands_topic}"), sends[0])
                   if f"commit {s.commands_topic}" in children(spans, p)]  # the batch that committed it
        polls = linked_to(spans_named(spans, f"process {s.events_topic}"), sends[0])
        groups = {p.attributes["messaging.consumer.group.name"] for p in polls if children(spans, p)}
        sse = linked_to(spans_named(spans, "runledger.sse.deliver"), sends[0])
        done = process and projectors <= groups and sse
        return {"spans": spans, "send": sends[0], "process": process, "polls": polls, "sse": sse} if done else None
    found = await wait_until(whole, 30, "every span of the command's trace at the receiver")
    spans, send_span = found["spans"], found["send"]

    # The HTTP request's span (FastAPI's) is the root of the command's trace, and send is its PRODUCER child
    [http_span] = [x for x in spans if x.span_id == send_span.parent_id]
    assert (http_span.name, http_span.kind, http_span.parent_id, http_span.trace_id) == \
        ("POST /v1/commands", "SERVER", None, send_span.trace_id)
    assert (send_span.kind, send_span.service) == ("PRODUCER", f"runledger-{s.topic_prefix}")
    assert {k: send_span.attributes.get(k) for k in ("messaging.system", "messaging.destination.name",
                                                      "messaging.operation.type", "runledger.tenant_id")} == \
        {"messaging.system": "kafka", "messaging.destination.name": s.commands_topic,
         "messaging.operation.type": "send", "runledger.tenant_id": tenant}
    assert isinstance(send_span.attributes["messaging.kafka.offset"], int)
    trace_id = send_span.trace_id

    # The processor's batch: a root CONSUMER span linked to the command, with decide, send and commit children
    process = found["process"][0]
    assert (process.kind, process.parent_id) == ("CONSUMER", None)
    assert {k: process.attributes.get(k) for k in ("messaging.system", "messaging.operation.type",
                                                    "messaging.consumer.group.name")} == \
        {"messaging.system": "kafka", "messaging.operation.type": "process",
         "messaging.consumer.group.name": s.processor_group}
    assert process.attributes["messaging.destination.partition.id"] == \
        send_span.attributes["messaging.destination.partition.id"]
    [link] = [l for l in process.links if l.span_id == send_span.span_id]
    assert (link.trace_id, link.attributes["messaging.kafka.offset"], link.attributes["runledger.tenant_id"]) == \
        (trace_id, send_span.attributes["messaging.kafka.offset"], tenant)
    steps = [x for x in spans if x.parent_id == process.span_id]
    [decide] = [x for x in steps if x.name == "runledger.decide"
                and x.attributes["runledger.command_id"] == outcome["command_id"]]
    assert (decide.kind, decide.attributes["runledger.outcome"], decide.attributes["runledger.chain_seq"],
            decide.attributes["runledger.run_id"], decide.attributes["runledger.tenant_id"]) == \
        ("INTERNAL", "accepted", outcome["events"][-1]["chain_seq"], outcome["aggregate_id"], tenant)
    [events_sent] = [x for x in steps if x.name == f"send {s.events_topic}"]
    [commit] = [x for x in steps if x.name == f"commit {s.commands_topic}"]
    assert (events_sent.kind, commit.kind, commit.attributes["messaging.operation.type"], commit.status) == \
        ("CLIENT", "CLIENT", "settle", "UNSET")
    assert send_span.span_id in {l.span_id for l in events_sent.links}

    # Every projector's poll is a CONSUMER span linked to the command's context, with its store as a child
    for group in sorted(projectors):
        polls = [p for p in found["polls"] if p.attributes["messaging.consumer.group.name"] == group]
        stored = [children(spans, p).get("runledger.store") for p in polls]
        assert any(stored), f"{group}: no poll with a store child"
        poll = polls[stored.index(next(x for x in stored if x))]
        assert (poll.kind, poll.parent_id, poll.attributes["messaging.destination.name"]) == \
            ("CONSUMER", None, s.events_topic)
        assert [l.trace_id for l in poll.links if l.span_id == send_span.span_id] == [trace_id]

    # And the SSE hub's delivery to the subscriber links to it too
    sse = found["sse"][0]
    assert (sse.attributes["runledger.tenant_id"], sse.attributes["runledger.sse.channel"],
            sse.attributes["runledger.sse.subscribers"]) == (tenant, "tenant", 1)
