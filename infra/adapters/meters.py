"""runledger's instruments on the hot paths: the API's command round trip, the processor, projectors, SSE.

docs/operations.md ("Metrics") tables every one. They are cheap by construction:

- Attribute sets are made once per distinct value and reused (`Attributes`), and every value
  comes from a closed set (a command type runledger knows, else `other`), so a hostile body cannot
  grow a metric's series.
- The processor tallies a transaction's decisions in a plain dict while it decides, and adds the
  tally to the counters once, after the commit. An aborted transaction's commands are decided
  again after the partition is rebuilt, so counting at the commit counts each command once, and a
  batch of 200 alike commands costs one `add`.
- SSE counts per notification, not per event and subscriber; a subscriber's overflow is counted
  where it happens, off the normal path.

Names follow the OpenTelemetry semantic conventions where one exists (`messaging.process.duration`
for a processor batch; FastAPI records `http.server.request.duration` itself); the rest are ours,
under `runledger.`. Read-model gauges (lag, approval backlog, budgets) are in queries/metrics.py.
"""
from functools import lru_cache
from time import perf_counter
from typing import Any, Callable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from domain.commands import COMMAND_TYPES

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Attributes:
    """Attribute sets made once per distinct tuple of values, then handed out again."""

    def __init__(self, *names: str, **constant: Any):
        self.names, self.constant = names, constant
        self.made: dict[tuple, dict[str, Any]] = {}

    def __call__(self, *values: Any) -> dict[str, Any]:
        found = self.made.get(values)
        if found is None:
            found = self.made[values] = {**self.constant, **{n: v for n, v in zip(self.names, values) if v is not None}}
        return found


def command_type(command: dict[str, Any]) -> str:
    body = command.get("body")
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if kind in COMMAND_TYPES else "other"


def outcome_of(reply: dict[str, Any]) -> str:
    """`accepted`, `rejected`, or `replayed` (an earlier outcome returned again for its Idempotency-Key)."""
    return "replayed" if reply.get("original_command_id") else reply["status"]


def default_meter() -> Meter:
    return metrics.get_meter("runledger")


class CommandMeters:
    """The API's side: how long a command took from produce to its reply."""

    def __init__(self, meter: Meter):
        self.duration = meter.create_histogram(
            "runledger.command.duration", unit="s", explicit_bucket_boundaries_advisory=SECONDS,
            description="from producing a command to its reply, as the API waits for it; outcome pending: no "
                        "reply in RUNLEDGER_COMMAND_TIMEOUT_S; log_unavailable: the log did not take it (a 503)")
        self.attributes = Attributes("command_type", "outcome")

    def answered(self, command: dict[str, Any], reply: dict[str, Any] | None, started: float,
                 outcome: str | None = None) -> None:
        outcome = outcome or ("pending" if reply is None else outcome_of(reply))
        self.duration.record(perf_counter() - started, self.attributes(command_type(command), outcome))


class Tally:
    """One transaction's decisions, counted while it runs, added to the counters once it commits."""

    __slots__ = ("trigger", "size", "started", "outcomes", "decisions")

    def __init__(self, trigger: str, size: int):
        self.trigger, self.size, self.started = trigger, size, perf_counter()
        self.outcomes: dict[tuple[str, str, str | None], int] = {}
        self.decisions: dict[tuple[str, str], int] = {}

    def decided(self, command: dict[str, Any], reply: dict[str, Any]) -> None:
        outcome = outcome_of(reply)
        key = (command_type(command), outcome, reply.get("code") if outcome == "rejected" else None)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        decision = reply.get("decision") if outcome == "accepted" else None
        if decision and decision.get("decision"):
            kind = (decision["decision"], decision.get("source") or "envelope")
            self.decisions[kind] = self.decisions.get(kind, 0) + 1


class ProcessorMeters:
    """The processor's transactions: what they decided, how big and long they were, why they aborted."""

    def __init__(self, meter: Meter, commands_topic: str, group: str):
        self.commands = meter.create_counter("runledger.processor.commands", unit="{command}",
                                             description="commands decided, in committed transactions")
        self.rejections = meter.create_counter("runledger.processor.rejections", unit="{command}",
                                               description="commands rejected, by rejection code")
        self.decisions = meter.create_counter("runledger.policy.decisions", unit="{decision}",
                                              description="tool_call.policy_decided outcomes, by decision and source")
        self.batch = meter.create_histogram("runledger.processor.batch.size", unit="{command}",
                                            explicit_bucket_boundaries_advisory=SIZES,
                                            description="commands per committed transaction")
        self.transactions = meter.create_counter("runledger.processor.transactions", unit="{transaction}",
                                                 description="transactions committed, or aborted and why")
        self.process = meter.create_histogram(
            "messaging.process.duration", unit="s", explicit_bucket_boundaries_advisory=SECONDS,
            description="one transaction over a consumed batch of commands: decide, send, commit")
        self.fencings = meter.create_counter("runledger.processor.fenced", unit="{transaction}",
                                             description="transactions refused because another processor fenced "
                                                         "this one's transactional id")
        self.rebuild = meter.create_histogram(
            "runledger.processor.partition.rebuild.duration", unit="s", explicit_bucket_boundaries_advisory=SECONDS,
            description="replaying a partition's events and replies when taking it over")
        self.meter, self.counted = meter, None
        self.by_command, self.by_code = Attributes("command_type", "outcome"), Attributes("command_type", "code")
        self.by_decision, self.by_trigger = Attributes("decision", "source"), Attributes("trigger")
        self.by_transaction, self.by_partition = Attributes("trigger", "outcome", "reason"), Attributes("partition")
        self.processing = Attributes("error.type", **{
            "messaging.system": "kafka", "messaging.operation.name": "process",
            "messaging.destination.name": commands_topic, "messaging.consumer.group.name": group})

    def tally(self, records: int, commands: int) -> Tally:
        return Tally("consumed" if records else "timer", commands)

    def committed(self, tally: Tally) -> None:
        for (kind, outcome, code), n in tally.outcomes.items():
            self.commands.add(n, self.by_command(kind, outcome))
            if code is not None:
                self.rejections.add(n, self.by_code(kind, code))
        for key, n in tally.decisions.items():
            self.decisions.add(n, self.by_decision(*key))
        self.batch.record(tally.size, self.by_trigger(tally.trigger))
        self.transactions.add(1, self.by_transaction(tally.trigger, "committed", None))
        if tally.trigger == "consumed":
            self.process.record(perf_counter() - tally.started, self.processing(None))

    def aborted(self, tally: Tally, reason: str, partition: int) -> None:
        self.transactions.add(1, self.by_transaction(tally.trigger, "aborted", reason))
        if reason == "fenced":
            self.fencings.add(1, self.by_partition(str(partition)))
        if tally.trigger == "consumed":
            self.process.record(perf_counter() - tally.started, self.processing(reason))

    def rebuilt(self, started: float) -> None:
        self.rebuild.record(perf_counter() - started)

    def observe_partitions(self, owned: Callable[[], int], broken: Callable[[], int]) -> None:
        """Publish how many command partitions the processor owns, and how many it stopped (chain broken)."""
        first, self.counted = self.counted is None, (owned, broken)  # the latest processor built on these topics
        if first:
            self.meter.create_observable_gauge("runledger.processor.partitions", [self.partitions],
                                               unit="{partition}", description="command partitions this processor "
                                                                               "owns, or stopped at a broken chain")

    def partitions(self, _: CallbackOptions) -> list[Observation]:
        owned, broken = self.counted
        return [Observation(owned(), {"state": "owned"}), Observation(broken(), {"state": "broken"})]


class ProjectorMeters:
    """Each projector's stored polls (ProjectorRunner.on_applied calls `applied`)."""

    def __init__(self, meter: Meter):
        self.events = meter.create_counter("runledger.projector.events", unit="{event}",
                                           description="events stored by the projector")
        self.duration = meter.create_histogram("runledger.projector.store.duration", unit="s",
                                               explicit_bucket_boundaries_advisory=SECONDS,
                                               description="verifying and storing one poll's events")
        self.attributes = Attributes("projector")

    def applied(self, projector: str, events: int, seconds: float) -> None:
        attributes = self.attributes(projector)
        self.events.add(events, attributes)
        self.duration.record(seconds, attributes)


def channel_kind(channel: str) -> str:
    """`tenant`, `approvals` or `run`: the kind of a channel, never its run id (unbounded)."""
    return channel.partition(":")[0]


class StreamMeters:
    """SSE subscribers, what the hub offered them, and the slow ones it cut off."""

    def __init__(self, meter: Meter):
        self.subscribers = meter.create_up_down_counter("runledger.sse.subscribers", unit="{subscriber}",
                                                        description="SSE subscribers following a channel")
        self.offered = meter.create_counter("runledger.sse.offered", unit="{event}",
                                            description="events the hub offered to subscribers' queues, one per "
                                                        "event and subscriber")
        self.overflows = meter.create_counter("runledger.sse.overflows", unit="{subscriber}",
                                              description="subscribers cut off because their queue was full")
        self.dropped = meter.create_counter("runledger.sse.dropped", unit="{event}",
                                            description="events an overflowed subscriber did not get (it resumes "
                                                        "from its last id)")
        self.attributes = Attributes("channel")

    def of(self, channel: str) -> dict[str, Any]:
        return self.attributes(channel_kind(channel))

    def subscribed(self, channel: str, change: int) -> None:
        self.subscribers.add(change, self.of(channel))

    def handed(self, channel: str, events: int) -> None:
        if events:
            self.offered.add(events, self.of(channel))

    def overflowed(self, channel: str, dropped: int) -> None:
        self.overflows.add(1, self.of(channel))
        self.missed(channel, dropped)

    def missed(self, channel: str, dropped: int) -> None:
        self.dropped.add(dropped, self.of(channel))


@lru_cache(maxsize=None)
def command_meters(meter: Meter | None = None) -> CommandMeters:
    return CommandMeters(meter or default_meter())


@lru_cache(maxsize=None)
def processor_meters(commands_topic: str, group: str, meter: Meter | None = None) -> ProcessorMeters:
    return ProcessorMeters(meter or default_meter(), commands_topic, group)


@lru_cache(maxsize=None)
def projector_meters(meter: Meter | None = None) -> ProjectorMeters:
    return ProjectorMeters(meter or default_meter())


@lru_cache(maxsize=None)
def stream_meters(meter: Meter | None = None) -> StreamMeters:
    return StreamMeters(meter or default_meter())
