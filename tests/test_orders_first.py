"""Orders first: while an order, a cancel or a halt is in a real gateway's core, its event
bus limits stream sends (tests/test_bus_delivery.py drives the bus itself). Reads,
quotes and the like do not; a caller that goes away still lets go of the limit.

The core's loop is watched from inside (RunningGateway.call): a command is "in the core"
from the moment it is queued until its answer, and the test looks in between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import AsyncExecutionClient
from execgw.client import Quote as ClientQuote
from execgw.server.clock import ManualClock
from execgw.server.domain import OrderIntent, OrderType, Product, Quote, Side, Validity

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION
    from tests.stream_helpers import INFY, TIMEOUT_S, flow_intent
else:
    from conftest import MARKET_OPEN, RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION
    from stream_helpers import INFY, TIMEOUT_S, flow_intent

# A connection of its own for the subscribers: the caller's calls must not wait behind
# their streams' flow control.
OWN_CONNECTION = {"grpc.use_local_subchannel_pool": 1}
# A guard only: the whole flow takes a second or two.
PHASE_TIMEOUT_S = 60.0


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        gateway.call(
            gateway.gateway.core.apply_quotes(
                [Quote(symbol="NSE:INFY", ltp=Decimal("1500"), timestamp=MARKET_OPEN)]
            )
        )
        yield gateway
    finally:
        gateway.stop()


def _intent(order_type: OrderType = OrderType.MARKET, price: str | None = None) -> OrderIntent:
    return OrderIntent(
        strategy_code="alpha",
        symbol="NSE:INFY",
        side=Side.BUY,
        qty=1,
        order_type=order_type,
        product=Product.MIS,
        validity=Validity.DAY,
        price=None if price is None else Decimal(price),
    )


def _orders_in_core_during(running: RunningGateway, make: Callable[[], Awaitable[Any]]) -> int:
    """How many orders the bus counts while the command `make` queues waits for its
    answer, after which the count must be back to none."""

    async def watch() -> int:
        bus = running.gateway.core.bus
        task = asyncio.ensure_future(make())
        await asyncio.sleep(0)  # the caller has queued its command and waits
        during = bus.orders_in_core
        await task
        assert bus.orders_in_core == 0
        return during

    result: int = running.call(watch())
    return result


def test_orders_cancels_and_halts_count_reads_and_quotes_do_not(
    running: RunningGateway,
) -> None:
    core = running.gateway.core
    assert _orders_in_core_during(running, lambda: core.submit(_intent(), "first")) == 1
    resting = running.call(core.submit(_intent(OrderType.LIMIT, "1400.00"), "resting"))
    assert resting.status.is_open
    assert _orders_in_core_during(running, lambda: core.cancel(resting.order_id)) == 1
    assert _orders_in_core_during(running, lambda: core.halt("alpha", "desk", "drill")) == 1
    assert _orders_in_core_during(running, lambda: core.get_order(resting.order_id)) == 0
    assert _orders_in_core_during(running, lambda: core.list_orders()) == 0
    assert _orders_in_core_during(running, lambda: core.risk_report()) == 0
    quote = Quote(symbol="NSE:INFY", ltp=Decimal("1501"), timestamp=MARKET_OPEN)
    assert _orders_in_core_during(running, lambda: core.apply_quotes([quote])) == 0


def test_a_caller_that_goes_away_lets_go_of_the_limit(running: RunningGateway) -> None:
    """Cancelled while its order waits in the core: the order is still placed (the
    writer runs every queued command), and the bus no longer counts it."""

    async def cancel_midway() -> tuple[int, int]:
        core = running.gateway.core
        task = asyncio.ensure_future(core.submit(_intent(), "gone"))
        await asyncio.sleep(0)
        during = core.bus.orders_in_core
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return during, core.bus.orders_in_core

    assert running.call(cancel_midway()) == (1, 0)
    placed, _ = running.call(running.gateway.core.list_orders())
    assert [o.client_order_id for o in placed] == ["gone"]


SUBSCRIBERS = 20
STEADY_ORDERS = 300
# The smallest allowed, so that orders first would cut streams off if it put
# them behind without bound (a quarter of it, 4 events, is as far as it may).
SMALL_QUEUE = 16


@pytest.fixture
def small_queue(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(
        make_config(tmp_path, stream={"queue_size": SMALL_QUEUE}, execution=RELAXED_EXECUTION),
        clock,
    )
    try:
        yield gateway
    finally:
        gateway.stop()


async def test_a_steady_flow_of_orders_cuts_no_stream_off(small_queue: RunningGateway) -> None:
    """One caller sends orders back to back while 20 subscribers (who would not
    reconnect) follow every event through a queue of 16: orders go first, yet no stream
    falls a queue behind, and each gets every event of the flow in order."""
    async with (
        AsyncExecutionClient(small_queue.target, timeout=TIMEOUT_S) as caller,
        AsyncExecutionClient(
            small_queue.target, timeout=TIMEOUT_S, channel_options=OWN_CONNECTION
        ) as watcher,
    ):
        assert await caller.publish_quotes([ClientQuote(symbol=INFY, ltp=1500.0)]) == 1
        live = 0
        all_live = asyncio.Event()

        async def follow() -> list[int]:
            nonlocal live
            stream = watcher.stream_fills(
                include_order_updates=True, heartbeats=True, reconnect=False
            )
            sequences: list[int] = []
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.HasField("heartbeat"):
                        if not sequences and live < SUBSCRIBERS and not all_live.is_set():
                            live += 1
                            if live == SUBSCRIBERS:
                                all_live.set()
                        continue
                    sequences.append(event.sequence)
                    if len(sequences) == 2 * STEADY_ORDERS:  # accepted and filled, each
                        return sequences
            raise AssertionError(f"stream ended after {len(sequences)} events")

        followers = [asyncio.create_task(follow()) for _ in range(SUBSCRIBERS)]
        await asyncio.wait_for(all_live.wait(), PHASE_TIMEOUT_S)
        head = small_queue.gateway.core.bus.head
        for i in range(STEADY_ORDERS):
            await caller.submit(flow_intent(i, ("alpha", "beta"), (INFY,)))
        received = await asyncio.wait_for(asyncio.gather(*followers), PHASE_TIMEOUT_S)
    assert small_queue.gateway.core.bus.overflowed == 0
    for sequences in received:
        assert sequences == list(range(head + 1, head + 1 + 2 * STEADY_ORDERS))
