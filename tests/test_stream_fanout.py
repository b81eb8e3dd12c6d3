"""Fan-out: many concurrent subscribers each get every event once, in order; and
subscribers that come and go (cancelled mid-replay, mid-stream, or by closing their
channel) leave no subscription, thread or memory behind.

The gateway runs in-process (conftest.RunningGateway) so the bus can be watched: the
test waits on the bus's own subscriber count, never on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import AsyncGenerator, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import (
    AsyncExecutionClient,
    ExecgwError,
    ExecutionClient,
    ExecutionEvent,
    Quote,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION
    from tests.stream_helpers import (
        EVERYTHING,
        INFY,
        TCS,
        TIMEOUT_S,
        BusWatch,
        assert_filtered_explains_jumps,
        expected_sequences,
        flow_intent,
        rss_kb,
    )
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION
    from stream_helpers import (
        EVERYTHING,
        INFY,
        TCS,
        TIMEOUT_S,
        BusWatch,
        assert_filtered_explains_jumps,
        expected_sequences,
        flow_intent,
        rss_kb,
    )

SUBSCRIBERS = 120
# Clients, each on its own connection: gRPC channels of one process otherwise share one,
# and the gateway lets a connection hold fewer calls (server.max_streams_per_connection)
# than 120 subscribers and the burst's submitters.
CHANNELS = 4
OWN_CONNECTION = {"grpc.use_local_subchannel_pool": 1}
BURST_ORDERS = 200
SENTINEL = "fanout-sentinel"
CHURN_CYCLES = 300
WARM_UP_CYCLES = 40
WAVE = 20
# Guards only: a whole phase must finish well within these.
PHASE_TIMEOUT_S = 60.0


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path, execution=RELAXED_EXECUTION), clock)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def watch(running: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> BusWatch:
    return BusWatch(running, monkeypatch)


async def publish_prices(client: AsyncExecutionClient) -> None:
    quotes = [Quote(symbol=INFY, ltp=1500.0), Quote(symbol=TCS, ltp=4100.0)]
    assert await client.publish_quotes(quotes) == 2


async def submit_burst(client: AsyncExecutionClient, first: int, count: int) -> None:
    numbers = iter(range(first, first + count))

    async def worker() -> None:
        for i in numbers:
            await client.submit(flow_intent(i, ("alpha", "beta", "gamma"), (INFY, TCS)))

    await asyncio.gather(*(worker() for _ in range(16)))


async def test_every_subscriber_of_many_gets_every_event_once_in_order(
    running: RunningGateway, watch: BusWatch
) -> None:
    journal = Path(running.config.journal.path)
    clients = [
        AsyncExecutionClient(running.target, timeout=TIMEOUT_S, channel_options=OWN_CONNECTION)
        for _ in range(CHANNELS)
    ]
    live = 0
    all_live = asyncio.Event()

    async def follow(stream: AsyncGenerator[ExecutionEvent, None]) -> list[ExecutionEvent]:
        nonlocal live
        events: list[ExecutionEvent] = []
        async with contextlib.aclosing(stream):
            going_live = await anext(stream)
            assert going_live.HasField("heartbeat"), going_live
            live += 1
            if live == SUBSCRIBERS:
                all_live.set()
            async for event in stream:
                if event.HasField("heartbeat"):
                    continue
                events.append(event)
                if event.HasField("fill") and event.fill.client_order_id == SENTINEL:
                    return events
        raise AssertionError("the stream ended before the sentinel's fill")

    try:
        await publish_prices(clients[0])
        head0 = running.gateway.core.bus.head
        followers = [
            asyncio.create_task(
                follow(
                    clients[n % CHANNELS].stream_fills(
                        include_order_updates=True, include_risk_events=True, heartbeats=True
                    )
                )
            )
            for n in range(SUBSCRIBERS)
        ]
        await asyncio.wait_for(all_live.wait(), PHASE_TIMEOUT_S)
        assert watch.count == SUBSCRIBERS

        started = time.perf_counter()
        await submit_burst(clients[0], 0, BURST_ORDERS)
        sentinel = await clients[0].submit(
            flow_intent(0, ("sentinel",), (INFY,)), client_order_id=SENTINEL
        )
        results = await asyncio.wait_for(asyncio.gather(*followers), PHASE_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.close()

    last = next(
        e.sequence
        for e in results[0]
        if e.HasField("fill") and e.fill.order_id == sentinel.order_id
    )
    expected = expected_sequences(journal, EVERYTHING, after=head0, upto=last)
    assert len(expected) >= 2 * BURST_ORDERS
    for n, events in enumerate(results):
        assert [e.sequence for e in events] == expected, f"subscriber {n}"
        assert_filtered_explains_jumps(events, head0 + 1)
    delivered = len(expected) * SUBSCRIBERS
    print(
        f"\nfan-out: {len(expected)} events x {SUBSCRIBERS} subscribers = {delivered} "
        f"deliveries in {elapsed:.2f}s ({delivered / elapsed:.0f}/s)"
    )
    await asyncio.to_thread(watch.wait_idle)


async def churn(target: str, cycles: int, first_cycle: int) -> dict[str, int]:
    """Subscribers that come and go in waves, ended four different ways."""
    kinds = {"live-break": 0, "replay-break": 0, "channel-closed": 0, "task-cancelled": 0}
    async with AsyncExecutionClient(target, timeout=TIMEOUT_S) as shared:

        async def live_then_break() -> None:
            stream = shared.stream_fills(include_order_updates=True, heartbeats=True)
            async with contextlib.aclosing(stream):
                assert (await anext(stream)).HasField("heartbeat")

        async def replay_then_break() -> None:
            stream = shared.stream_fills(from_sequence=1, include_order_updates=True)
            async with contextlib.aclosing(stream):
                for _ in range(5):
                    assert not (await anext(stream)).HasField("heartbeat")

        async def close_channel_mid_stream() -> None:
            own = AsyncExecutionClient(target, timeout=TIMEOUT_S)
            stream = own.stream_fills(from_sequence=1, include_order_updates=True, reconnect=False)
            try:
                for _ in range(3):
                    await anext(stream)
                await own.close()
                try:
                    await anext(stream)
                except (ExecgwError, StopAsyncIteration):
                    pass
                except asyncio.CancelledError:
                    # What grpc.aio raises for a call cancelled locally (see the test
                    # below); re-raised when this task itself is being cancelled.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
            finally:
                await stream.aclose()
                await own.close()

        async def cancel_the_task() -> None:
            beat = asyncio.Event()

            async def reader() -> None:
                stream = shared.stream_fills(include_risk_events=True, heartbeats=True)
                async with contextlib.aclosing(stream):
                    async for event in stream:
                        if event.HasField("heartbeat"):
                            beat.set()

            task = asyncio.create_task(reader())
            await asyncio.wait_for(beat.wait(), TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        ways = [
            ("live-break", live_then_break),
            ("replay-break", replay_then_break),
            ("channel-closed", close_channel_mid_stream),
            ("task-cancelled", cancel_the_task),
        ]
        for start in range(first_cycle, first_cycle + cycles, WAVE):
            wave = range(start, min(start + WAVE, first_cycle + cycles))
            jobs: list[Coroutine[Any, Any, object]] = []
            for n in wave:
                name, job = ways[n % len(ways)]
                kinds[name] += 1
                jobs.append(job())
            # Live events keep flowing while subscribers come and go.
            jobs.append(shared.submit(flow_intent(start, ("churn",), (INFY, TCS))))
            await asyncio.wait_for(asyncio.gather(*jobs), PHASE_TIMEOUT_S)
    return kinds


async def fill_default_executor() -> None:
    """Run as many blocking calls at once as the running loop's default executor has
    workers (asyncio's default: min(32, cpus + 4)), so that it has started them all."""
    workers = min(32, (os.cpu_count() or 1) + 4)
    together = threading.Barrier(workers)
    await asyncio.gather(*(asyncio.to_thread(together.wait, TIMEOUT_S) for _ in range(workers)))


async def test_subscriber_churn_leaves_no_subscription_thread_or_memory_behind(
    running: RunningGateway, watch: BusWatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        await publish_prices(client)
        await submit_burst(client, 0, 60)  # history for the replays to read

    await churn(running.target, WARM_UP_CYCLES, 0)
    await asyncio.to_thread(watch.wait_idle)
    # Default executors start threads lazily up to their cap: start them all now, on the
    # gateway's loop and on this one, so any thread counted later is a new one.
    running.call(fill_default_executor())
    await fill_default_executor()
    caplog.clear()
    gc.collect()
    threads_before = threading.active_count()
    rss_before = rss_kb()
    tracemalloc.start()
    try:
        subscribed_before = watch.subscribed
        started = time.perf_counter()
        # Two halves: a leak grows with the cycles, so the second half must not add
        # what the first did (state the churn's own orders add is small and fixed).
        traced = []
        kinds: dict[str, int] = {}
        for half in range(2):
            done = await churn(
                running.target, CHURN_CYCLES // 2, WARM_UP_CYCLES + half * CHURN_CYCLES // 2
            )
            kinds = {k: kinds.get(k, 0) + v for k, v in done.items()}
            await asyncio.to_thread(watch.wait_idle)
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    threads_after = threading.active_count()
    rss_after = rss_kb()
    print(
        f"\nchurn: {CHURN_CYCLES} cycles {kinds} in {elapsed:.2f}s; threads {threads_before} -> "
        f"{threads_after}; memory allocated since the start and still held: "
        f"{traced[0] / 1024:.0f} KiB after {CHURN_CYCLES // 2} cycles, "
        f"{traced[1] / 1024:.0f} KiB after {CHURN_CYCLES} (peak {peak / 1024:.0f} KiB); "
        f"RSS {rss_before // 1024} MiB -> {rss_after // 1024} MiB"
    )
    # Streams that end during their replay never subscribe; the others did.
    assert watch.subscribed - subscribed_before >= kinds["live-break"] + kinds["task-cancelled"]
    assert watch.count == 0
    assert threads_after <= threads_before, (threads_before, threads_after)
    assert traced[1] < 2 * 1024 * 1024, traced
    assert traced[1] - traced[0] < 1024 * 1024, traced
    assert rss_after - rss_before < 50 * 1024, (rss_before, rss_after)
    # Last, so that everything above is checked first: clients leave all the time, often
    # while the gateway is writing to them, and the gateway must not log each one at
    # ERROR with a traceback (an operator's log would drown in them).
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, (
        f"{len(errors)} ERROR records while {CHURN_CYCLES} subscribers came and went, e.g. "
        f"{errors[0].name}: {errors[0].getMessage()}"
    )


async def test_closing_the_async_client_ends_its_open_stream_with_cancelled(
    running: RunningGateway, watch: BusWatch
) -> None:
    """`close()`: "open streams end with CANCELLED". The sync client raises
    ExecgwError(CANCELLED); the async one must not raise a bare asyncio.CancelledError
    into a task nobody cancelled (asyncio code takes that for its own cancellation)."""
    sync_client = ExecutionClient(running.target, timeout=TIMEOUT_S)
    sync_stream = sync_client.stream_fills(heartbeats=True)
    assert next(sync_stream).HasField("heartbeat")
    sync_client.close()
    with pytest.raises(ExecgwError) as sync_raised:
        next(sync_stream)
    assert sync_raised.value.code == grpc.StatusCode.CANCELLED

    client = AsyncExecutionClient(running.target, timeout=TIMEOUT_S)
    stream = client.stream_fills(heartbeats=True)
    try:
        assert (await anext(stream)).HasField("heartbeat")
        await client.close()
        try:
            await anext(stream)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            assert not task.cancelling()  # nobody cancelled this task
            outcome = "a bare asyncio.CancelledError"
        except ExecgwError as e:
            outcome = f"ExecgwError({e.code.name})"
        else:
            outcome = "another event"
    finally:
        await stream.aclose()
        await client.close()
    await asyncio.to_thread(watch.wait_idle)
    assert outcome == "ExecgwError(CANCELLED)", (
        f"AsyncExecutionClient.close() ended its open stream with {outcome}; expected "
        "ExecgwError(CANCELLED) like the sync client"
    )
