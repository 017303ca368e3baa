"""The spans of one processor transaction: `process <prefix>.commands` and its decide, send and commit children.

One CONSUMER span per batch, linked to each command's creation context (its record's
`traceparent` header); under it a `runledger.decide` per command, one `send <prefix>.events`
(CLIENT: the events carry their commands' contexts, so it links to those), and the transaction's
end as the conventions' settle span, `commit <prefix>.commands`, or `abort <prefix>.commands`
with status ERROR. Timer transactions (expiries, sweeps, checkpoints) consume no message and get
no spans. A batch whose span does not record hands out one shared no-op for everything.
"""
from contextlib import asynccontextmanager
from typing import Any, AsyncContextManager, AsyncIterator, Sequence

from opentelemetry import context, trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer

from infra.adapters.eventlog import Record
from infra.adapters.settings import Settings
from infra.adapters.tracing import (command_attributes, failed, format_traceparent, messaging, record_link,
                                    record_traceparent, sampled, start_linked, tracer)

__all__ = ["consumed", "tracer", "Batch", "UNTRACED"]


class Untraced:
    """What a batch that records nothing hands out: every span and step is this one no-op."""

    recording = False

    def __enter__(self) -> "Untraced":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def deciding(self, command: dict[str, Any]) -> "Untraced":
        return self

    def decided(self, outcome: dict[str, Any], envelopes: list[dict[str, Any]]) -> None:
        return None

    def sending(self, topic: str) -> "Untraced":
        return self

    def sent(self, events: int, replies: int) -> None:
        return None

    def transaction(self, opened: AsyncContextManager[None]) -> AsyncContextManager[None]:
        return opened


UNTRACED = Untraced()


class Child:
    """A child span of the batch, ended when its block ends (an error leaving the block recorded on it)."""

    def __init__(self, span: Span):
        self.span = span

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is not None:
            failed(self.span, error)
        self.span.end()
        return False

    def decided(self, outcome: dict[str, Any], envelopes: list[dict[str, Any]]) -> None:
        found = {"runledger.outcome": outcome.get("status"), "runledger.rejection_code": outcome.get("code"),
                 "runledger.events": len(envelopes)}
        if envelopes:
            found["runledger.chain_seq"] = envelopes[-1]["chain_seq"]
            if envelopes[0].get("aggregate_type") == "run":
                found.setdefault("runledger.run_id", envelopes[0]["aggregate_id"])
        self.span.set_attributes({k: v for k, v in found.items() if v is not None})

    def sent(self, events: int, replies: int) -> None:
        self.span.set_attributes({"messaging.batch.message_count": events, "runledger.replies": replies})


class Batch(Untraced):
    """The recording spans of one consumed batch of commands."""

    recording = True

    def __init__(self, tracer_: Tracer, settings: Settings, partition: int, count: int, span: Span,
                 links: list[Link]):
        self.tracer, self.settings, self.partition, self.count = tracer_, settings, partition, count
        self.span, self.links = span, links
        self.contexts = {format_traceparent(link.context): link.context for link in links}
        self.parent = trace.set_span_in_context(span)
        self.token = None

    def __enter__(self) -> "Batch":
        self.token = context.attach(self.parent)  # current while the transaction runs: its logs can name it
        return self

    def __exit__(self, kind, error, tb) -> bool:
        context.detach(self.token)
        if error is not None:
            failed(self.span, error)
        self.span.end()
        return False

    def child(self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: dict | None = None,
              links: Sequence[Link] = ()) -> Span:
        return self.tracer.start_span(name, self.parent, kind, attributes=attributes, links=links)

    def deciding(self, command: dict[str, Any]) -> "Child | Untraced":
        """A `runledger.decide` span for the command, unless its own trace was not sampled."""
        traceparent = command.get("traceparent")
        if traceparent and not sampled(traceparent):
            return UNTRACED
        linked = self.contexts.get(traceparent)  # parsed once, for the batch's links
        return Child(self.child("runledger.decide", attributes=command_attributes(command),
                                links=[Link(linked)] if linked else ()))

    def sending(self, topic: str) -> Child:
        return Child(self.child(f"send {topic}", SpanKind.CLIENT, messaging(
            "send", "send", topic, **{"messaging.destination.partition.id": str(self.partition)}), self.links))

    def settling(self, outcome: str) -> Span:
        topic = self.settings.commands_topic
        return self.child(f"{outcome} {topic}", SpanKind.CLIENT, messaging(outcome, "settle", topic, **{
            "messaging.destination.partition.id": str(self.partition),
            "messaging.consumer.group.name": self.settings.processor_group,
            "messaging.batch.message_count": self.count,
            "runledger.transactional_id": self.settings.transactional_id(self.partition)}))

    def transaction(self, opened: AsyncContextManager[None]) -> AsyncContextManager[None]:
        return self.traced(opened)

    @asynccontextmanager
    async def traced(self, opened: AsyncContextManager[None]) -> AsyncIterator[None]:
        """The transaction, its end a `commit` span, or an `abort` span with status ERROR if the block raised."""
        end: Span | None = None
        try:
            async with opened:
                try:
                    yield
                except BaseException:
                    end = self.settling("abort")
                    raise
                end = self.settling("commit")
        except BaseException as error:
            if end is not None:
                failed(end, error)
            raise
        finally:
            if end is not None:
                end.end()


def consumed(tracer_: Tracer, settings: Settings, partition: int, records: Sequence[Record]) -> Untraced:
    """The spans of a batch of command records: a Batch if its `process` span records, else UNTRACED."""
    if not records:
        return UNTRACED
    topic = settings.commands_topic
    span, links = start_linked(tracer_, f"process {topic}", messaging("process", "process", topic, **{
        "messaging.destination.partition.id": str(partition), "messaging.consumer.group.name": settings.processor_group,
        "messaging.batch.message_count": len(records)}), records, record_traceparent, record_link)
    if not span.is_recording():
        span.end()
        return UNTRACED
    return Batch(tracer_, settings, partition, len(records), span, links)
