"""Traces on the in-memory twin: a command's context in the record headers of both topics, the processor's batch
span linked to it with its decide, send and commit children, a projector's poll span linked to the events,
aborts recorded, and nothing recorded when no exporter asked for it."""
import asyncio
import json
from contextlib import asynccontextmanager

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from commands.bus import CommandBus
from commands.processor import CommandProcessor
from domain import handlers
from domain.commands import RequestRun
from infra.adapters import telemetry
from infra.adapters.eventlog import TopicPartition
from infra.adapters.eventlog.memory import MemoryLog
from infra.adapters.tracing import envelope_traceparent, header
from projectors.memory import MemoryProjection, MemoryStore
from projectors.runner import ProjectorRunner
from tests.support import command, make_settings, unique, wait_until

SAMPLED_CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Spans:
    """A tracer provider of the test's own (the global one is never set here), exporting to memory."""

    def __init__(self, exporting: bool = True):
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=telemetry.sampler(exporting))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def named(self, name: str) -> list:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str):
        [span] = self.named(name)
        return span

    async def wait_for(self, *names: str) -> None:
        await wait_until(lambda: all(self.named(n) for n in names), 10, f"spans {names}")


class Kinds(MemoryProjection):
    name = "kinds"

    def row(self, env: dict) -> str:
        return env["type"]


def twin(settings) -> MemoryLog:
    return MemoryLog([settings.commands_topic, settings.events_topic, settings.replies_topic], settings.partitions)


@asynccontextmanager
async def stack(settings, log: MemoryLog, tracer, projecting: bool = False):
    """The processor, the API's bus and (if asked) a projector, all on the twin and the test's tracer."""
    processor = CommandProcessor(settings, log_=log, tracer=tracer)
    bus = CommandBus(settings, log, tracer)
    runner = ProjectorRunner(settings, await Kinds(MemoryStore(), settings.topic_prefix).open(), log_=log,
                             tracer=tracer) if projecting else None
    stop = asyncio.Event()
    tasks = [asyncio.create_task(processor.run(stop))] + ([asyncio.create_task(runner.run(stop))] if runner else [])
    await wait_until(lambda: len(processor.owners) == settings.partitions or tasks[0].done(), 10, "ownership")
    await bus.start()
    try:
        yield bus, processor
    finally:
        await bus.stop()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


def on_topic(log: MemoryLog, topic: str) -> list:
    return [r for p in range(log.partitions) for r in log.visible(TopicPartition(topic, p), 0)]


def traceparent(span) -> str:
    return f"00-{format_trace_id(span.context.trace_id)}-{format_span_id(span.context.span_id)}-{span.context.trace_flags:02x}"


async def test_a_command_carries_its_send_spans_context_into_both_topics_and_the_batch_links_to_it():
    settings, spans = make_settings(partitions=1), Spans()
    log = twin(settings)
    sent = command(unique("t"), {"type": "RequestRun", "agent_id": "a"})
    async with stack(settings, log, spans.tracer) as (bus, _):
        # Given the HTTP request's span, When the bus submits a command under it
        with spans.tracer.start_as_current_span("POST /v1/commands", kind=SpanKind.SERVER) as http:
            reply = await bus.submit(sent)
        await spans.wait_for(f"process {settings.commands_topic}", f"commit {settings.commands_topic}")
    assert reply["status"] == "accepted"
    send = spans.one(f"send {settings.commands_topic}")
    # Then the command record and the event records carry the send span's context, in the header and the envelope
    [cmd] = on_topic(log, settings.commands_topic)
    [event] = on_topic(log, settings.events_topic)
    context = traceparent(send)
    assert (header(cmd.headers).decode(), json.loads(cmd.value)["traceparent"]) == (context, context)
    assert (header(event.headers).decode(), json.loads(event.value)["traceparent"]) == (context, context)
    # And send is the HTTP span's PRODUCER child, with the conventions' attributes and where the record went
    assert (send.kind, send.parent.span_id, send.context.trace_id) == \
        (SpanKind.PRODUCER, http.get_span_context().span_id, http.get_span_context().trace_id)
    assert {k: send.attributes.get(k) for k in ("messaging.system", "messaging.operation.type",
                                                 "messaging.destination.name", "messaging.destination.partition.id",
                                                 "messaging.kafka.offset", "runledger.command_id")} == \
        {"messaging.system": "kafka", "messaging.operation.type": "send",
         "messaging.destination.name": settings.commands_topic, "messaging.destination.partition.id": "0",
         "messaging.kafka.offset": 0, "runledger.command_id": sent["command_id"]}
    # And the batch's process span is a root CONSUMER span linked to the command's creation context
    process = spans.one(f"process {settings.commands_topic}")
    assert (process.kind, process.parent) == (SpanKind.CONSUMER, None)
    assert [(link.context.trace_id, link.context.span_id, dict(link.attributes)) for link in process.links] == \
        [(send.context.trace_id, send.context.span_id, {"messaging.destination.partition.id": "0",
                                                        "messaging.kafka.offset": 0,
                                                        "runledger.tenant_id": sent["tenant_id"]})]
    assert {k: process.attributes[k] for k in ("messaging.consumer.group.name", "messaging.batch.message_count",
                                                "messaging.operation.type")} == \
        {"messaging.consumer.group.name": settings.processor_group, "messaging.batch.message_count": 1,
         "messaging.operation.type": "process"}
    # And decide, send and commit are its children
    decide, events_sent = spans.one("runledger.decide"), spans.one(f"send {settings.events_topic}")
    commit = spans.one(f"commit {settings.commands_topic}")
    assert {s.name: (s.parent.span_id, s.kind) for s in (decide, events_sent, commit)} == \
        {decide.name: (process.context.span_id, SpanKind.INTERNAL),
         events_sent.name: (process.context.span_id, SpanKind.CLIENT),
         commit.name: (process.context.span_id, SpanKind.CLIENT)}
    assert {k: decide.attributes.get(k) for k in ("runledger.command_id", "runledger.outcome", "runledger.chain_seq",
                                                   "runledger.run_id")} == \
        {"runledger.command_id": sent["command_id"], "runledger.outcome": "accepted", "runledger.chain_seq": 1,
         "runledger.run_id": reply["aggregate_id"]}
    assert [l.context.span_id for l in decide.links] == [send.context.span_id]
    assert (events_sent.attributes["messaging.batch.message_count"], [l.context.span_id for l in events_sent.links]) \
        == (1, [send.context.span_id])
    assert (commit.attributes["messaging.operation.type"], commit.status.status_code) == ("settle", StatusCode.UNSET)


async def test_a_projectors_poll_span_links_to_the_events_creation_context_and_has_its_store_as_a_child():
    settings, spans = make_settings(partitions=1), Spans()
    log = twin(settings)
    sent = command(unique("t"), {"type": "RequestRun", "agent_id": "a"})
    async with stack(settings, log, spans.tracer, projecting=True) as (bus, _):
        await bus.submit(sent)
        await spans.wait_for(f"process {settings.events_topic}", "runledger.store")
    send, poll, store = (spans.one(f"send {settings.commands_topic}"), spans.one(f"process {settings.events_topic}"),
                         spans.one("runledger.store"))
    assert (poll.kind, poll.parent, [(l.context.trace_id, l.context.span_id) for l in poll.links]) == \
        (SpanKind.CONSUMER, None, [(send.context.trace_id, send.context.span_id)])
    assert (poll.attributes["messaging.consumer.group.name"], poll.attributes["runledger.projection"]) == \
        (f"{settings.topic_prefix}.projector.kinds", "kinds")
    assert (store.parent.span_id, store.attributes["runledger.events_stored"]) == (poll.context.span_id, 1)


@pytest.fixture
def request_run_breaks():
    """RequestRun raises a defect (not a domain rejection) while this fixture is active."""
    original = handlers.HANDLERS[RequestRun]

    def broken(cmd, ctx):
        raise KeyError("a defect")
    handlers.HANDLERS[RequestRun] = (broken, original[1])
    try:
        yield
    finally:
        handlers.HANDLERS[RequestRun] = original


async def test_an_aborted_transaction_is_an_error_on_its_batch_with_an_abort_span(request_run_breaks):
    settings, spans = make_settings(partitions=1), Spans()
    log = twin(settings)
    sent = command(unique("t"), {"type": "RequestRun", "agent_id": "a"})
    async with stack(settings, log, spans.tracer) as (bus, _):
        reply = await bus.submit(sent)
        await spans.wait_for(f"abort {settings.commands_topic}")
    assert (reply["status"], reply["code"]) == ("rejected", "undecidable")  # refused once rebuilt
    abort, first = spans.one(f"abort {settings.commands_topic}"), spans.named(f"process {settings.commands_topic}")[0]
    assert (abort.status.status_code, abort.attributes["error.type"], abort.parent.span_id) == \
        (StatusCode.ERROR, "Undecidable", first.context.span_id)
    assert (first.status.status_code, [e.name for e in first.events]) == (StatusCode.ERROR, ["exception"])
    assert spans.named("runledger.decide")[0].status.status_code == StatusCode.ERROR


async def test_without_an_exporter_nothing_records_yet_every_record_carries_a_fresh_context():
    settings, spans = make_settings(partitions=1), Spans(exporting=False)
    log = twin(settings)
    plain = command(unique("t"), {"type": "RequestRun", "agent_id": "a"})
    async with stack(settings, log, spans.tracer) as (bus, _):
        await bus.submit(plain)
    assert spans.exporter.get_finished_spans() == ()
    [cmd] = on_topic(log, settings.commands_topic)
    version, trace_id, span_id, flags = header(cmd.headers).decode().split("-")
    assert (version, int(flags, 16) & 1, trace_id != "0" * 32) == ("00", 0, True)
    [event] = on_topic(log, settings.events_topic)
    assert header(event.headers) == header(cmd.headers)


async def test_without_an_exporter_a_callers_sampled_trace_is_followed_through_the_batch():
    settings, spans = make_settings(partitions=1), Spans(exporting=False)
    log = twin(settings)
    traced = {**command(unique("t"), {"type": "RequestRun", "agent_id": "a"}), "traceparent": SAMPLED_CALLER}
    async with stack(settings, log, spans.tracer) as (bus, _):
        await bus.submit(traced)
        await spans.wait_for(f"commit {settings.commands_topic}")
    send, process = spans.one(f"send {settings.commands_topic}"), spans.one(f"process {settings.commands_topic}")
    assert format_trace_id(send.context.trace_id) == SAMPLED_CALLER.split("-")[1]
    assert [l.context.span_id for l in process.links] == [send.context.span_id]


def test_an_sse_rows_traceparent_is_the_envelopes_own_not_one_in_its_payload():
    own, nested = "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
    text = ('{"type": "x", "payload": {"traceparent": "' + nested + '"}, "chain_seq": 3, "traceparent": "'
            + own + '", "aggregate_type": "run"}')
    assert (envelope_traceparent({"envelope": text}), envelope_traceparent({"envelope": '{"a": 1}'})) == (own, None)


@pytest.mark.parametrize("variables, expected", [
    ({}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
])
def test_the_exporters_are_the_ones_the_standard_variables_name(monkeypatch, variables, expected):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert telemetry.exporter_names() == expected


def test_an_exporter_or_protocol_runledger_does_not_ship_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(telemetry.TelemetryMisconfigured, match="zipkin"):
        telemetry.exporter_names()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(telemetry.TelemetryMisconfigured, match="http/json"):
        telemetry.otlp_protocol()


@pytest.mark.parametrize("protocol, module", [("grpc", "grpc"), ("http/protobuf", "http"), (None, "http")])
def test_the_otlp_protocol_picks_the_official_exporter(monkeypatch, protocol, module):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol)
    else:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    exporter = telemetry.otlp_exporter()
    try:
        assert type(exporter).__module__ == f"opentelemetry.exporter.otlp.proto.{module}.trace_exporter"
    finally:
        exporter.shutdown()


def test_otel_service_name_names_the_service(monkeypatch):
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert telemetry.resource("runledger").attributes["service.name"] == "runledger"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ledger-api")
    assert telemetry.resource("runledger").attributes["service.name"] == "ledger-api"
