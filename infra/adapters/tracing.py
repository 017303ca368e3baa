"""runledger's spans, after the OpenTelemetry messaging conventions: bus, processor, projectors, SSE.

Why they are shaped like this (docs/operations.md, "Tracing", draws the tree):

- Batches are linked, not parented. A processor transaction decides many commands and a projector
  poll stores many events, of many traces, so its `process` span (CONSUMER) links to each message's
  creation context, as the conventions prefer for batches, and its work hangs under it as children.
- Creation contexts travel in W3C `traceparent` Kafka headers, written and read with the W3C
  propagator whatever OTEL_PROPAGATORS says (the header is named after that format). A command's
  is its `send` span's; the bus writes the same value into the command, and the processor stamps it
  into every event the command appends, where it is on the chain and hashed. So an event's creation
  context is its command's, a context the application supplies in the conventions' words: the
  events' `send` span is a CLIENT span that links to those contexts instead of replacing them, and
  each projector's and SSE delivery's links lead straight back into the command's trace.
- Sampling follows the links: the sampled ones are handed to the span at its start, where
  telemetry.FollowLinks sees them, so a batch holding a sampled message is sampled whatever the root ratio.
- Nothing is parsed, linked or formatted for a span that does not record. Without an exporter only
  what a caller sampled records, so a batch costs one non-recording span and a look at each
  message's trace flags, and a command costs its `send` span.
"""
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

W3C = TraceContextTextMapPropagator()
MAX_LINKS = 128  # the SDK's default OTEL_SPAN_LINK_COUNT_LIMIT: it would drop any beyond
T = TypeVar("T")


def tracer() -> Tracer:
    return trace.get_tracer("runledger")


def messaging(operation: str, kind: str, topic: str, **more: Any) -> dict[str, Any]:
    """The conventions' attributes of a Kafka operation (`kind` is messaging.operation.type)."""
    return {"messaging.system": "kafka", "messaging.operation.name": operation,
            "messaging.operation.type": kind, "messaging.destination.name": topic, **more}


def header(headers: Iterable[tuple[str, bytes]], name: str = "traceparent") -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def sampled(traceparent: str | bytes) -> bool:
    """Whether a W3C traceparent's flags (its last two hex digits) say sampled."""
    try:
        return bool(int(traceparent[-2:], 16) & 1)
    except (TypeError, ValueError):
        return False


def context_of(traceparent: str | bytes | None) -> SpanContext | None:
    """The span context a W3C traceparent names, or None if it names none."""
    if not traceparent:
        return None
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("ascii", "replace")
    found = trace.get_current_span(W3C.extract({"traceparent": traceparent})).get_span_context()
    return found if found.is_valid else None


def format_traceparent(context: SpanContext) -> str:
    """The W3C traceparent of a span context (as the propagator writes it)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def failed(span: Span, error: BaseException) -> None:
    """Record an error on a span as the conventions do: exception event, error.type, status ERROR."""
    if span.is_recording():
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:240]))


@contextmanager
def ending(span: Span) -> Iterator[Span]:
    """End the span when the block ends; an error leaving the block is recorded on it."""
    try:
        yield span
    except BaseException as error:
        failed(span, error)
        raise
    finally:
        span.end()


def linking(items: Sequence[T], traceparent: Callable[[T], str | bytes | None],
            describe: Callable[[T], dict[str, Any]], only_sampled: bool, seen: set) -> list[Link]:
    """Links to the distinct contexts the items carry and `seen` lacks (adding them), up to MAX_LINKS in all."""
    links = []
    for item in items:
        if len(seen) >= MAX_LINKS:
            break
        value = traceparent(item)
        if not value or value in seen or (only_sampled and not sampled(value)):
            continue
        seen.add(value)
        if (context := context_of(value)) is not None:
            links.append(Link(context, describe(item)))
    return links


def start_linked(tracer_: Tracer, name: str, attributes: dict[str, Any], items: Sequence[T],
                 traceparent: Callable[[T], str | bytes | None],
                 describe: Callable[[T], dict[str, Any]]) -> tuple[Span, list[Link]]:
    """Start a `process` span (CONSUMER) linked to the items' creation contexts; return it and its links.

    The sampled contexts are linked at the start, for the sampler; the others only if it records.
    """
    seen: set = set()
    links = linking(items, traceparent, describe, True, seen)
    span = tracer_.start_span(name, kind=SpanKind.CONSUMER, attributes=attributes, links=links)
    if span.is_recording():
        for link in (more := linking(items, traceparent, describe, False, seen)):
            span.add_link(link.context, link.attributes)
        links += more
    return span, links


# -- the API's side: one command to `<prefix>.commands` ------------------------------------------------------

@contextmanager
def producing(tracer_: Tracer, topic: str, command: dict[str, Any]) -> Iterator[tuple[Span, list | None]]:
    """Open `send <topic>` (PRODUCER) for a command; yield it and the record headers carrying its context.

    The span is a child of the current span (the HTTP request's), or else of the context the
    command already carries. Its context becomes the command's creation context: the headers and
    the command's own `traceparent` (rewritten here) both hold it.
    """
    parent = None if trace.get_current_span().get_span_context().is_valid else \
        W3C.extract({"traceparent": command["traceparent"]}) if command.get("traceparent") else None
    span = tracer_.start_span(f"send {topic}", parent, SpanKind.PRODUCER, attributes=messaging("send", "send", topic))
    if span.is_recording():
        span.set_attributes({**command_attributes(command), "messaging.kafka.message.key": command["tenant_id"]})
    carrier: dict[str, str] = {}
    W3C.inject(carrier, trace.set_span_in_context(span))
    if "traceparent" in carrier:
        command["traceparent"] = carrier["traceparent"]
    with ending(span):
        yield span, [(k, v.encode()) for k, v in carrier.items()] or None


@contextmanager
def producing_batch(tracer_: Tracer, topic: str, commands: list[dict[str, Any]]) -> Iterator[tuple[Span, list | None]]:
    """As `producing`, one `send <topic>` span for a batch of commands (messaging.batch.message_count), whose
    context becomes every one's creation context: one span, not one per command, for a batch request."""
    first = commands[0] if commands else {}
    parent = None if trace.get_current_span().get_span_context().is_valid else \
        W3C.extract({"traceparent": first["traceparent"]}) if first.get("traceparent") else None
    span = tracer_.start_span(f"send {topic}", parent, SpanKind.PRODUCER, attributes=messaging(
        "send", "send", topic, **{"messaging.batch.message_count": len(commands)}))
    carrier: dict[str, str] = {}
    W3C.inject(carrier, trace.set_span_in_context(span))
    for command in commands:
        if "traceparent" in carrier:
            command["traceparent"] = carrier["traceparent"]
    with ending(span):
        yield span, [(k, v.encode()) for k, v in carrier.items()] or None


def delivered(span: Span, partition: int, offset: int) -> None:
    if span.is_recording():
        span.set_attributes({"messaging.destination.partition.id": str(partition), "messaging.kafka.offset": offset})


def command_attributes(command: dict[str, Any]) -> dict[str, Any]:
    body = command.get("body") if isinstance(command.get("body"), dict) else {}
    found = {"runledger.tenant_id": command.get("tenant_id"), "runledger.command_id": command.get("command_id"),
             "runledger.command_type": body.get("type"), "runledger.run_id": body.get("run_id")}
    return {k: v for k, v in found.items() if isinstance(v, str)}


# -- a projector's poll of `<prefix>.events` -----------------------------------------------------------------

def record_link(record) -> dict[str, Any]:
    described = {"messaging.destination.partition.id": str(record.partition), "messaging.kafka.offset": record.offset}
    if record.key:
        described["runledger.tenant_id"] = record.key.decode("utf-8", "replace")
    return described


def record_traceparent(record) -> bytes | None:
    return header(record.headers)


class Poll:
    """One projector poll's `process` span and its store child."""

    def __init__(self, tracer_: Tracer, span: Span, projection: str):
        self.tracer, self.span, self.projection = tracer_, span, projection
        self.child: Span | None = None

    @contextmanager
    def storing(self) -> Iterator["Poll"]:
        """Open `runledger.store` under the poll (the verified write of rows and positions)."""
        if not self.span.is_recording():
            yield self
            return
        child = self.tracer.start_span("runledger.store", trace.set_span_in_context(self.span),
                                       attributes={"runledger.projection": self.projection})
        with ending(child):
            self.child = child
            yield self

    def stored(self, count: int, held: int) -> None:
        if self.child is not None:
            self.child.set_attributes({"runledger.events_stored": count, "runledger.tenants_held": held})


@contextmanager
def polled(tracer_: Tracer, group: str, projection: str, fetched: dict) -> Iterator[Poll]:
    """Open `process <topic>` for a poll ({TopicPartition: records} of one topic), linked to its events' contexts."""
    topic = next(iter(fetched)).topic
    records = [r for batch in fetched.values() for r in batch]
    attributes = messaging("process", "process", topic, **{
        "messaging.consumer.group.name": group, "messaging.batch.message_count": len(records),
        "runledger.projection": projection})
    if len(fetched) == 1:
        attributes["messaging.destination.partition.id"] = str(next(iter(fetched)).partition)
    span, _ = start_linked(tracer_, f"process {topic}", attributes, records, record_traceparent, record_link)
    with ending(span), trace.use_span(span, end_on_exit=False):
        yield Poll(tracer_, span, projection)


# -- SSE: the hub handing a channel's new events to its subscribers -------------------------------------------

def envelope_traceparent(row: dict[str, Any]) -> str | None:
    """The top-level traceparent of a channel row's envelope (PostgreSQL's jsonb text), without parsing it.

    jsonb writes shorter keys first, so `payload` (whose content could hold any key) comes before
    `traceparent`, and inside a string a quote is escaped: the last match is the envelope's own.
    """
    text = row.get("envelope") or ""
    at = text.rfind('"traceparent": "')
    return text[at + 16:at + 71] if at >= 0 else None


@contextmanager
def delivering(tracer_: Tracer, tenant_id: str, channel: str, rows: list[dict[str, Any]],
               subscribers: int) -> Iterator[Span]:
    """Open `runledger.sse.deliver` for a channel's new rows, linked to their events' contexts."""
    kind, _, run_id = channel.partition(":")
    attributes = {"runledger.tenant_id": tenant_id, "runledger.sse.channel": kind,
                  "runledger.sse.subscribers": subscribers, "messaging.batch.message_count": len(rows)}
    if run_id:
        attributes["runledger.run_id"] = run_id
    span, _ = start_linked(tracer_, "runledger.sse.deliver", attributes, rows, envelope_traceparent,
                           lambda row: {"runledger.sse.seq": row["seq"]})
    with ending(span):
        yield span
