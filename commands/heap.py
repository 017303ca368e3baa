"""Keeping Python's cyclic garbage collector off a partition's fold (docs/adr/0014-fold-out-of-the-gc.md).

A fold is millions of long-lived objects. Each full collection walks all of them with the event loop
stopped: measured at 100,000 events in one partition, 25 full collections while the fold was rebuilt,
snapshotted and restored, the longest 0.52 s; they grow with the fold, and a loop stopped for longer
than the session timeout (3 s) is a lost heartbeat and a partition moved for nothing. The fold holds no
reference cycles of its own, so it needs only reference counting: after the fold is built in bulk, it is
moved to the permanent generation (`gc.freeze`), which collections skip; what is allocated later is
collected as usual. While it is built, collection is off (every collection then would walk it again).
"""
import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def bulk() -> Iterator[None]:
    """No collection while the block allocates the fold in bulk; then the fold is frozen out of collection."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        settle()
        if was:
            gc.enable()


def settle() -> None:
    """Freeze everything tracked now (collecting first would walk the whole new fold once more)."""
    gc.freeze()
