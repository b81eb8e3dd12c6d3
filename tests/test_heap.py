"""heap.py: after start-up the gateway's live heap is frozen, and each full collection
freezes its survivors, so full collections stop walking the whole day (issue 15's tail
latency). The collector itself stays on, and garbage is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from execgw.server.heap import YOUNG_OBJECTS_PER_COLLECTION, freeze_long_lived, stop_freezing


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def frozen() -> Iterator[None]:
    freeze_long_lived()
    try:
        yield
    finally:
        stop_freezing()
        gc.unfreeze()  # the test process's objects back under the collector


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


@pytest.mark.usefixtures("frozen")
def test_the_live_heap_is_frozen_and_the_collector_stays_on() -> None:
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()
    assert gc.get_threshold()[0] == YOUNG_OBJECTS_PER_COLLECTION


@pytest.mark.usefixtures("frozen")
def test_a_full_collection_freezes_what_survives_it() -> None:
    kept = [cycle() for _ in range(100)]
    before = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() >= before + len(kept)
    assert not gc.get_objects(generation=2)  # the next full walk starts empty


@pytest.mark.usefixtures("frozen")
def test_a_younger_collection_freezes_nothing() -> None:
    """Only what survives a full collection is long-lived; young cycles must stay
    collectable."""
    kept = [cycle() for _ in range(100)]
    before = gc.get_freeze_count()
    gc.collect(1)
    assert kept
    assert gc.get_freeze_count() == before


@pytest.mark.usefixtures("frozen")
def test_young_garbage_cycles_are_still_collected() -> None:
    for _ in range(100):
        cycle()
    assert gc.collect() >= 200


@pytest.mark.usefixtures("frozen")
def test_young_garbage_cycles_are_collected_without_being_asked() -> None:
    """Less often than by default, but still: each cycle is two tracked objects."""
    first = weakref.ref(cycle())
    for _ in range(YOUNG_OBJECTS_PER_COLLECTION):
        cycle()
    assert first() is None


def test_idempotent_and_stoppable() -> None:
    callbacks = len(gc.callbacks)
    threshold = gc.get_threshold()
    gc.set_threshold(1234, *threshold[1:])
    try:
        freeze_long_lived()
        freeze_long_lived()
        assert len(gc.callbacks) == callbacks + 1
        assert gc.get_threshold()[0] == YOUNG_OBJECTS_PER_COLLECTION
        stop_freezing()
        assert len(gc.callbacks) == callbacks
        assert gc.get_threshold() == (1234, *threshold[1:])  # as it was found
        frozen = gc.get_freeze_count()
        kept = [cycle() for _ in range(10)]
        gc.collect()
        assert kept
        assert gc.get_freeze_count() == frozen  # no longer freezing
    finally:
        stop_freezing()
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_collector_switched_off_stays_off() -> None:
    threshold = gc.get_threshold()
    gc.set_threshold(0, *threshold[1:])
    try:
        freeze_long_lived()
        assert gc.get_threshold()[0] == 0
        stop_freezing()
        assert gc.get_threshold()[0] == 0
    finally:
        stop_freezing()
        gc.unfreeze()
        gc.set_threshold(*threshold)
