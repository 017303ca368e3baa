"""The confluent-kafka (librdkafka) adapter's group consumer (infra/adapters/eventlog/confluent.py builds it;
kafka_group.py is the aiokafka one, memory_group.py the twin; confluent_mapping.py maps librdkafka's errors and types).

librdkafka calls the rebalance callbacks inside `poll`, on the consumer's own thread (every blocking call of
a client runs on a single-thread executor of that client's, never the event loop's). Each callback runs the
port's coroutine on the processor's loop and waits for it (`run_coroutine_threadsafe(...).result()`), so a
revoke completes before the next assignment, as Ownership relies on; `generation` counts the callbacks.

The binding serialises every call on a consumer handle: while `poll` waits (up to the processor's poll interval)
even `pause` or `assignment()` from another thread waits for it, and from the loop inside a rebalance callback it
never returns. So only the consumer's thread touches the handle. The assignment, the paused set, the positions
and the group metadata are this adapter's own copies (`pause`, `resume`, `seek` of a partition not assigned raise
NotAssigned from them); `pause`, `resume` and `seek` are queued in call order and applied on the consumer's
thread before its next poll, or inside the callback that made them, before it returns (so an assignment is
paused before any of its records is returned). A seek librdkafka refuses because the partition's fetch has not
started yet (`_STATE`, right after an assignment) is kept, with what follows it for that partition (the resume),
for the next round: the partition stays paused meanwhile, so nothing is read from an offset nobody chose.

Committed offsets are read with an admin client's OffsetFetch that does not require stable offsets, on a thread
of their own, never librdkafka's consumer. With `isolation.level=read_committed` the consumer's own fetch (in
`committed()`, and after `assign()` unless offsets are given) asks the broker for stable offsets, and retries
without end while any producer has a transactional offset commit pending for the partition
(UNSTABLE_OFFSET_COMMIT; librdkafka#3265): one such transaction stalled a partition's takeover for minutes, and
every other call of the consumer behind it (docs/adr/0013, "Open defect"). A processor reads its partition's
committed offset only after its writer's `init_transactions` has fenced the previous owner, which returns once
that owner's last transaction is complete, markers in `__consumer_offsets` included; so what is still pending
then is no transaction of the partition's own transactional id, and the last stable offset is the right one.
The assignment is given explicit offsets read the same way, so librdkafka fetches none itself.
"""
import asyncio
import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout

import confluent_kafka as ck
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from infra.adapters.backoff import Backoff
from infra.adapters.eventlog.confluent_mapping import TIMEOUT_S, Blocking, fetch, ours, ported, records_of, theirs
from infra.adapters.eventlog.kafka_group import starting
from infra.adapters.eventlog.port import GroupConsumer, LogError, Moved, OwnAssignment, Record, TopicPartition

log = logging.getLogger("runledger.eventlog")


class ConfluentGroupConsumer(OwnAssignment, GroupConsumer):
    def __init__(self, config: dict, topics: list[str], on_assigned: Moved, on_revoked: Moved,
                 patience: Backoff | None = None):
        self.topics, self.on_assigned, self.on_revoked, self.patience = topics, on_assigned, on_revoked, patience
        self.consumer = ck.Consumer(config)
        self.group, self.bootstrap = config["group.id"], config["bootstrap.servers"]
        self.call = Blocking("rdkafka-consumer")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.assigned: frozenset[TopicPartition] = frozenset()
        self.paused_tps: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.moves = 0
        self.subscribed = False
        self.metadata = None  # the consumer's group metadata as of its last poll or rebalance (KIP-447)
        self.lock = threading.Lock()
        self.ops: list[tuple[str, TopicPartition, int]] = []  # pause | resume | seek, for the consumer's thread

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await starting(self.patience, self.connect)

    async def connect(self) -> None:
        with ported("cannot join the consumer group"):
            await self.call(self.joining)

    def joining(self) -> None:
        self.consumer.list_topics(None, TIMEOUT_S)  # the broker answers: then join
        if not self.subscribed:
            self.consumer.subscribe(self.topics, on_assign=self.assign_cb, on_revoke=self.revoke_cb,
                                    on_lost=self.revoke_cb)
            self.subscribed = True
        self.metadata = self.consumer.consumer_group_metadata()

    async def stop(self) -> None:
        try:
            with ported("cannot leave the consumer group"):
                await self.call(self.consumer.close)  # its revoke callback runs here, on this loop
        finally:
            self.call.close()

    # -- on the consumer's thread ------------------------------------------------------------------
    def on_loop(self, coro) -> None:
        """Run the coroutine on the loop and wait for it; give up if the loop stops meanwhile (a process ending:
        nothing would ever run it, and this thread would keep the interpreter from exiting)."""
        try:
            done = asyncio.run_coroutine_threadsafe(coro, self.loop)
            while True:
                try:
                    return done.result(timeout=0.5)
                except TimeoutError:
                    if self.loop.is_closed() or not self.loop.is_running():
                        done.cancel()
                        log.warning("a rebalance callback was left unfinished: the event loop stopped")
                        return
        except Exception:  # noqa: BLE001 - as aiokafka: a failing listener is logged, the rebalance goes on
            log.exception("a rebalance callback failed")

    def assign_cb(self, consumer, partitions) -> None:
        try:  # from the committed offsets, else the earliest; librdkafka would read them requiring stable ones
            committed = self.committed_offsets([ours(tp) for tp in partitions])
            consumer.assign([theirs(tp, committed.get(ours(tp), ck.OFFSET_BEGINNING)) for tp in partitions])
        except LogError as error:
            log.warning("reading the assignment's committed offsets failed (%s); librdkafka reads them", error)
            consumer.assign(partitions)
        self.metadata = consumer.consumer_group_metadata()
        self.on_loop(self.assigned_now({ours(tp) for tp in partitions}))
        self.apply(consumer)

    def revoke_cb(self, consumer, partitions) -> None:
        self.on_loop(self.revoked_now({ours(tp) for tp in partitions}))  # then the binding unassigns them
        self.apply(consumer)

    def apply(self, consumer) -> None:
        """Apply the queued pause/resume/seek in order; keep a refused seek, and what follows it for its partition."""
        with self.lock:
            ops, self.ops = self.ops, []
        held: set[TopicPartition] = set()
        kept = []
        for op, tp, offset in ops:
            if tp in held:
                kept.append((op, tp, offset))
                continue
            try:
                if op == "seek":
                    consumer.seek(theirs(tp, offset))
                else:
                    (consumer.pause if op == "pause" else consumer.resume)([theirs(tp)])
            except KafkaException as exc:
                if op == "seek" and exc.args[0].code() == KafkaError._STATE and tp in self.assigned:
                    held.add(tp)
                    kept.append((op, tp, offset))
                    log.info("seeking %s waits for its fetch to start", tp)
                elif tp in self.assigned:
                    log.warning("%s of %s failed: %s", op, tp, exc.args[0].str())
        if kept:
            with self.lock:
                self.ops[:0] = kept

    def fetching(self, max_records: int, timeout_s: float) -> list:
        self.apply(self.consumer)
        messages = fetch(self.consumer, max_records, timeout_s)
        self.metadata = self.consumer.consumer_group_metadata()
        return messages

    # -- on the loop -------------------------------------------------------------------------------
    async def assigned_now(self, tps: set[TopicPartition]) -> None:
        self.assigned, self.paused_tps, self.positions = frozenset(tps), set(), {}
        self.moves += 1
        await self.on_assigned(set(tps))

    async def revoked_now(self, tps: set[TopicPartition]) -> None:
        self.moves += 1
        try:
            await self.on_revoked(tps)  # the old assignment stays current meanwhile, as in aiokafka
        finally:
            self.assigned, self.paused_tps, self.positions = frozenset(), set(), {}

    def queue(self, op: str, tps, offset: int = 0) -> None:
        self.check(tps)
        with self.lock:
            self.ops.extend((op, tp, offset) for tp in tps)

    def pause(self, *tps: TopicPartition) -> None:
        self.queue("pause", tps)
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.queue("resume", tps)
        self.paused_tps.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.queue("seek", (tp,), offset)
        self.positions[tp] = offset

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        with ported("cannot fetch"):
            messages = await self.call(self.fetching, max_records, timeout_ms / 1000)
        fetched: dict[TopicPartition, list[Record]] = {}
        for r in records_of(messages, "fetching"):
            fetched.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        for tp, records in fetched.items():
            self.positions[tp] = records[-1].offset + 1
        return fetched

    async def committed(self, tp: TopicPartition) -> int | None:
        self.check((tp,))
        return (await asyncio.to_thread(self.committed_offsets, [tp])).get(tp)

    def committed_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets of these partitions (none: not in the dict), not requiring stable ones
        (see the module's docstring); blocking, on any thread but the consumer's."""
        doing = f"cannot read the committed offsets of {sorted(tps)}"
        request = [ck.ConsumerGroupTopicPartitions(self.group, [theirs(tp) for tp in tps])]
        with ported(doing):
            try:
                # a client of its own each time: one kept from before a broker restart was seen never to be
                # answered again (every read timed out for minutes), and a takeover is rare enough to pay a connect
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": log})
                futures = admin.list_consumer_group_offsets(request, require_stable=False,
                                                                 request_timeout=TIMEOUT_S)
                got = futures[self.group].result(TIMEOUT_S)
            except FutureTimeout as exc:
                raise LogError(f"{doing}: no answer in {TIMEOUT_S:.0f} s") from exc
        offsets = {}
        for tp in got.topic_partitions:
            if tp.error:
                raise LogError(f"{doing}: {tp.error.str()}")
            if tp.offset >= 0:
                offsets[TopicPartition(tp.topic, tp.partition)] = tp.offset
        return offsets

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.check(offsets)
        with ported("cannot commit offsets"):
            await self.call(self.consumer.commit, offsets=[theirs(tp, o) for tp, o in offsets.items()],
                            asynchronous=False)

    async def position(self, tp: TopicPartition) -> int:
        self.check((tp,))
        if tp in self.positions:
            return self.positions[tp]
        (got,) = await self.call(self.consumer.position, [theirs(tp)])
        return got.offset if got.offset >= 0 else (await self.committed(tp) or 0)

    def group_metadata(self) -> object:
        if self.metadata is None:  # not started: no thread polls it, the handle is free (no generation yet)
            return self.consumer.consumer_group_metadata()
        return self.metadata
