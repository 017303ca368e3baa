"""librdkafka's errors and types as the event-log port's, and the thread a client's blocking calls run on (shared
by the confluent-kafka adapter's group consumer, confluent_group.py, and its writers and readers, confluent.py)."""
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import confluent_kafka as ck
from confluent_kafka import KafkaError, KafkaException

from infra.adapters.eventlog.port import Fenced, LogError, Record, TopicPartition

log = logging.getLogger("runledger.eventlog")

TIMEOUT_S = 30.0  # the longest any one blocking call waits for the broker (then LogError)
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def fenced(error: KafkaError) -> bool:
    return error.code() in FENCED


@contextmanager
def ported(doing: str) -> Iterator[None]:
    """Raise librdkafka's errors as the port's: Fenced for a fencing (fatal: the writer never writes again), else
    LogError saying what failed."""
    try:
        yield
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and fenced(error):
            raise Fenced(f"{doing}: {error.str()}") from exc
        raise LogError(f"{doing}: {error.str() if error is not None else exc!r}") from exc
    except (BufferError, RuntimeError) as exc:  # a full local queue, a closed client
        raise LogError(f"{doing}: {exc!r}") from exc


class Blocking:
    """Run one client's blocking calls, one at a time, on a thread of its own, awaited from the loop."""

    def __init__(self, name: str):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def __call__(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def ours(tp) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def theirs(tp: TopicPartition, offset: int = ck.OFFSET_INVALID) -> ck.TopicPartition:
    return ck.TopicPartition(tp.topic, tp.partition, offset)


def record_of(m) -> Record:
    return Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()))


def fetch(consumer, max_records: int, timeout_s: float) -> list:
    """Wait up to timeout_s for one message, then take what else is queued: `consume(n, t)` alone would wait
    the whole timeout for n messages."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first] + (consumer.consume(max_records - 1, 0) if max_records > 1 else [])


def records_of(messages: list, doing: str) -> list[Record]:
    records, errors = [], []
    for m in messages:
        (errors if m.error() else records).append(m)
    if errors and not records:
        raise LogError(f"{doing}: {errors[0].error().str()}")
    for m in errors:
        log.warning("%s: %s", doing, m.error().str())
    return [record_of(m) for m in records]
