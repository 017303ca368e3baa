"""commands/heap.py: a fold built in bulk is not collected meanwhile, and is frozen out of collection after."""
import gc

from commands.heap import bulk


class Node:
    def __init__(self, i: int):
        self.i, self.children = i, {}


def test_objects_built_in_bulk_are_frozen_and_collection_is_on_again_after():
    gc.enable()
    before = gc.get_freeze_count()
    with bulk():
        assert not gc.isenabled()
        fold = {i: Node(i) for i in range(5000)}
    assert gc.isenabled()
    assert gc.get_freeze_count() - before >= len(fold)  # each Node at least (an empty dict is not tracked)
    assert gc.get_count()[0] < 50  # the young generation starts empty: nothing of the fold is left to walk


def test_nested_bulks_turn_collection_on_only_at_the_outermost_end():
    gc.enable()
    with bulk():
        with bulk():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collection_left_off_by_the_caller_stays_off():
    gc.disable()
    try:
        with bulk():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
