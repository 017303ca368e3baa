"""The event log as its users see it: a group consumer, fenced transactional writers, readers, and the API's
plain producer and reply tail.

Three adapters pass one contract suite (tests/eventlog_contract.py): Kafka through aiokafka
(infra/adapters/eventlog/kafka.py), Kafka through confluent-kafka for the processor role (confluent.py,
docs/adr/0013-kafka-client.md) and an in-memory twin (infra/adapters/eventlog/memory.py) for fast unit tests of
ownership, pausing, fencing and rebalances. What the processor relies on, and the twin imitates:

- a consumer group moves partitions between members at any await, and tells each member through
  `on_revoked` before and `on_assigned` after; `generation` counts those moves, so code that awaited
  can tell whether the assignment it started from still holds;
- `seek`, `pause` and `resume` of a partition not assigned (any more) raise NotAssigned;
- a writer's `start()` fences every earlier writer of its transactional id: their open transaction
  is aborted and their next send or commit raises Fenced;
- a writer's sends are queued in call order; the transaction's commit fails (LogError, or Fenced) if any
  queued record failed, so nothing needs to await a record's delivery inside a transaction;
- readers, tails and consumers see only committed records (read_committed); an aborted
  transaction's records are never seen, and records after an open one wait until it ends;
- a plain producer's record is committed as soon as the log holds it, on the partition Kafka's
  default partitioner gives its key.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import AsyncContextManager, AsyncIterator, Awaitable, Callable, NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class Delivered(NamedTuple):
    """Where the log holds a record a producer sent."""
    topic: str
    partition: int
    offset: int


class LogError(Exception):
    """The log could not do it now (broker down, timeout, coordinator moving); trying again may work."""


class Fenced(LogError):
    """A newer writer of this transactional id started: this one may never write again."""


class NotAssigned(LogError):
    """The partition is not (or no longer) assigned to this consumer."""


Moved = Callable[[set[TopicPartition]], Awaitable[None]]


class GroupConsumer(ABC):
    """A member of a consumer group over some topics; offsets are committed by the caller."""

    @abstractmethod
    async def start(self) -> None:
        """Join the group."""

    @abstractmethod
    async def stop(self) -> None:
        """Leave the group (its partitions move to the other members)."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Return the partitions assigned to this member now."""

    @property
    @abstractmethod
    def generation(self) -> int:
        """Return a number that changes whenever this member's assignment changes."""

    @abstractmethod
    def pause(self, *tps: TopicPartition) -> None:
        """Stop fetching from the partitions (NotAssigned for one not assigned)."""

    @abstractmethod
    def resume(self, *tps: TopicPartition) -> None:
        """Fetch again from the partitions (NotAssigned for one not assigned)."""

    @abstractmethod
    def paused(self) -> set[TopicPartition]:
        """Return the assigned partitions that are paused."""

    @abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch the partition from offset next (NotAssigned for one not assigned)."""

    @abstractmethod
    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        """Return committed records of unpaused assigned partitions, waiting up to timeout_ms for some."""

    @abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None:
        """Return the group's committed offset of the partition, or None."""

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the group's offsets outside any transaction (so Kafka's own tools show the same lag)."""

    @abstractmethod
    async def position(self, tp: TopicPartition) -> int:
        """Return the offset of the next record getmany would return for the partition."""

    @abstractmethod
    def group_metadata(self) -> object:
        """Return what a writer of the same adapter needs to commit this group's offsets in a transaction (opaque:
        the group id for aiokafka and the twin, librdkafka's group metadata, KIP-447, for confluent-kafka)."""


class OwnAssignment:
    """For an adapter that keeps the assignment itself (the twin, confluent-kafka's): `assigned`, `moves`."""
    assigned: frozenset[TopicPartition] | set[TopicPartition]
    moves: int

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    @property
    def generation(self) -> int:
        return self.moves

    def check(self, tps) -> None:
        """Raise NotAssigned for the first of tps not assigned (now)."""
        if missing := [tp for tp in tps if tp not in self.assigned]:
            raise NotAssigned(f"no current assignment for partition {missing[0]}")


class TransactionalWriter(ABC):
    """A transactional producer with a transactional id: the broker fences its predecessors."""

    @abstractmethod
    async def start(self) -> None:
        """Initialise the transactional id, fencing every earlier writer of it."""

    @abstractmethod
    async def stop(self) -> None:
        """Close the writer (an open transaction is aborted)."""

    @abstractmethod
    def transaction(self) -> AsyncContextManager[None]:
        """Open a transaction: committed when the block ends, aborted if it raises."""

    @abstractmethod
    async def send(self, topic: str, value: bytes, key: bytes | None, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[None]:
        """Queue a record in the open transaction, in call order; raise only for what is refused at once.

        Awaiting the result waits until the log holds what was queued so far; nobody needs to (the processor does
        not): the transaction's commit fails if any queued record failed."""

    @abstractmethod
    async def send_offsets(self, offsets: dict[TopicPartition, int], consumer: GroupConsumer) -> None:
        """Commit the consumer's group's consumed offsets with the open transaction (the consumer is of this
        adapter: its `group_metadata()` is what the broker checks)."""


class PartitionReader(ABC):
    """A group-less read_committed reader of whole partitions."""

    @abstractmethod
    async def start(self) -> None:
        """Connect."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect."""

    @abstractmethod
    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Return each partition's last stable offset (the end a read_committed reader can reach)."""

    @abstractmethod
    def read(self, tp: TopicPartition, start: int = 0, end: int | None = None) -> AsyncIterator[Record]:
        """Yield the committed records of a partition from start up to end (default: its end now)."""


class Producer(ABC):
    """A plain producer: idempotent (a send retried inside the client is written once), no transactions."""

    @abstractmethod
    async def start(self) -> None:
        """Connect."""

    @abstractmethod
    async def stop(self) -> None:
        """Deliver what is queued, then disconnect."""

    @abstractmethod
    async def send(self, topic: str, value: bytes, key: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Delivered]:
        """Queue a record on its key's partition (murmur2, as Kafka's default partitioner), in call order.

        The result resolves once the log holds it (committed: readers see it), to where it is.
        """


class Tail(ABC):
    """A group-less read_committed reader of every partition of one topic, from where each ended at start."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and fix where the tail begins: each partition's last stable offset now.

        So it yields every record committed after start() returns, and none a read_committed reader could read then.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect."""

    @abstractmethod
    def records(self) -> AsyncIterator[Record]:
        """Yield the committed records from there on, in offset order per partition, waiting for new ones forever.

        A later call goes on from where the last one had fetched to: nothing is skipped after a
        LogError (raised between fetches), while leaving a loop early may skip what was fetched with the last record.
        """


class EventLog(ABC):
    """Builds the clients above for one cluster (or one in-memory log)."""

    @abstractmethod
    def group_consumer(self, topics: list[str], group: str, on_assigned: Moved, on_revoked: Moved,
                       max_poll_records: int = 500, **tuning: int) -> GroupConsumer:
        """Return a member of `group` over `topics` (not started); `tuning` is for the adapter's client."""

    @abstractmethod
    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        """Return a writer for the transactional id (not started)."""

    @abstractmethod
    def reader(self) -> PartitionReader:
        """Return a partition reader (not started)."""

    @abstractmethod
    def producer(self) -> Producer:
        """Return a plain producer (not started)."""

    @abstractmethod
    def tail(self, topic: str) -> Tail:
        """Return a tail of every partition of the topic (not started)."""

    @abstractmethod
    async def ensure_topics(self) -> None:
        """Create the ledger topics that are missing."""

    @abstractmethod
    async def partitions(self, topic: str) -> list[int]:
        """Return the topic's partitions in order (empty if it does not exist)."""

    async def session_floor_ms(self) -> int | None:
        """Return the shortest group session the cluster accepts (group.min.session.timeout.ms), None if it has none."""
        return None
