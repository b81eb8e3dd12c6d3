"""The cyclic garbage collector in a gateway that runs all day.

CPython's full (generation-2) collection walks every container object alive. A
gateway's day (its orders, the ledger, idempotency keys) is one heap that only grows
until the process stops, so each full collection walked all of it again, found next to
nothing, and held the event loop, and every call in flight, meanwhile: on a 2-core
machine, 30-70 ms early in the day and 370 ms at 100,000 orders (bench/run.py --day
100000, timed with gc.callbacks), over issue 15's 200 ms budget for the slowest
SubmitOrder. With the freezing below: 3-22 ms all day.

`gc.freeze()` moves every object the collector tracks to a permanent generation it never
walks; it is cheap (it splices lists). Freezing right after each full collection means
only what was just found alive is frozen, and the next full collection walks only the
objects that reached the old generation since: its pause no longer grows with the day.
Nothing else changes: reference counting still frees every frozen object that becomes
garbage, and young objects are collected as before. The cost: a frozen object that later
becomes part of an unreachable reference cycle is never reclaimed. There are few: after
30,000 orders, unfreezing and collecting found 75 such objects among 120,000 frozen.

The collector is disabled only while a start rebuilds the day from the journal
(recovery.rebuild).

Generation-0 collections come every 10,000 young objects instead of every 700. An
order makes several hundred objects, and with 16 calls in flight many are still alive
at each collection (requests, their spans waiting for the exporter's batch), so each
of those collections walked them and moved them on to the next generation to be walked
again. Timed with gc.callbacks over 3,200 SubmitOrders (16 in flight): the collector
took ~11 µs an order at 700 with telemetry off, ~35 µs with it on; at 10,000, 3 and 6
µs (SubmitOrder's rate with telemetry on: +15% over three interleaved pairs). The
price is fewer, longer pauses: over a 100,000-order day (bench/run.py --day), 81
generation-0 collections of at most 12.5 ms and 7 generation-1 collections of at most
25 ms, where there were ~0.3 ms pauses every few dozen orders.
"""

from __future__ import annotations

import gc

# Young objects (net of those freed) between two generation-0 collections: 700 by default.
YOUNG_OBJECTS_PER_COLLECTION = 10_000
# The threshold the first call found, for stop_freezing to put back.
_found_young: int | None = None


def freeze_long_lived() -> None:
    """After recovery, before taking calls: collect, freeze what is alive, and from now
    on freeze the survivors of every full collection. Idempotent."""
    global _found_young
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    # 0: automatic collection is off (someone chose so); it stays off.
    if young and _found_young is None:
        _found_young = young
        gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION, older, oldest)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def stop_freezing() -> None:
    """Full collections stop freezing their survivors, and young objects are collected
    as often as before; what is frozen stays frozen (gc.unfreeze() would put it all
    back under the collector)."""
    if _freeze_survivors in gc.callbacks:
        gc.callbacks.remove(_freeze_survivors)
    global _found_young
    if _found_young is not None:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(_found_young, older, oldest)
        _found_young = None


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()
