"""A subscriber that stops reading is cut off; nobody else notices.

The gateway runs as a real `execgw serve` subprocess (so its RSS can be read from
/proc) with stream.queue_size 256, while 15,000 events are produced by 6,000 concurrent
SubmitOrder calls (the gateway's per-submit cost grows with the day's order count, so
more would not fit the time budget). Two subscribers stop reading after their first message:
a raw gRPC call and the client library's stream_fills. Their channels turn off BDP
probing, so the HTTP/2 window stays at its 64 KiB default; otherwise gRPC grows the
window to several MiB and the client transport, not the gateway, absorbs ~50k events
before the gateway's queue even starts to fill.

Expected: the raw slow call ends with RESOURCE_EXHAUSTED and the resume sequence in the
trailers, and resuming from there yields everything; the client's stream reconnects by
itself and yields every event exactly once; a subscriber that reads normally receives
every event; every submit succeeds with sane latency; the server's RSS stays bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import yaml

from execgw.client import (
    AsyncExecutionClient,
    ExecutionClient,
    ExecutionEvent,
    OrderStatus,
    Quote,
    limit,
    market,
    stop,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port, journal_head
    from tests.stream_helpers import (
        EVERYTHING,
        INFY,
        RESUME_KEY,
        TIMEOUT_S,
        RawStream,
        StreamEnd,
        assert_exactly_once_in_order,
        assert_filtered_explains_jumps,
        channel,
        expected_sequences,
        percentile,
        rpc_end,
        rss_kb,
        stub,
    )
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port, journal_head
    from stream_helpers import (
        EVERYTHING,
        INFY,
        RESUME_KEY,
        TIMEOUT_S,
        RawStream,
        StreamEnd,
        assert_exactly_once_in_order,
        assert_filtered_explains_jumps,
        channel,
        expected_sequences,
        percentile,
        rpc_end,
        rss_kb,
        stub,
    )

# Small enough that the slow stream is cut off early in the burst, large enough that a
# reader starved of CPU on a busy 2-core CI machine is not mistaken for a slow one.
QUEUE_SIZE = 256
# Half MARKET orders (accepted + filled), half SL-M orders whose trigger the LTP has
# already crossed (accepted + triggered + filled): 2.5 events per submit on average.
ORDERS = 6_000
WARM_UP_ORDERS = 200
CONCURRENCY = 16
SAMPLE_EVERY = 1_000
RSS_GROWTH_LIMIT_KB = 150 * 1024
SLOW_CHANNEL = [("grpc.http2.bdp_probe", 0)]
FILLED = OrderStatus.ORDER_STATUS_FILLED


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    config: dict[str, Any] = {
        "mode": "paper",
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(tmp_path / "journal.db")},
        "market_data": {"source": "external"},
        "execution": RELAXED_EXECUTION,
        "stream": {"queue_size": QUEUE_SIZE},
        "server": {"shutdown_grace_s": 1.0},
    }
    path = tmp_path / "execgw.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    process = ServerProcess(path, port, log_level="WARNING")
    try:
        process.wait_serving()
        yield process
    finally:
        process.close()


def order(i: int) -> Any:
    """CNC, so the wall clock's time of day (MIS square-off) cannot matter."""
    side = "BUY" if i % 4 < 2 else "SELL"
    code = f"load{i % 6}"
    if i % 2:
        # Trigger already crossed by LTP 1500: triggers and fills at once.
        trigger = 1490.0 if side == "BUY" else 1510.0
        return stop(INFY, side, 1, trigger, strategy_code=code, product="CNC")
    return market(INFY, side, 1, strategy_code=code, product="CNC")


class Load:
    """Concurrent submits through the asyncio client, sampling the server's RSS."""

    def __init__(self, target: str, pid: int) -> None:
        self.target = target
        self.pid = pid
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.rss_samples: list[int] = []

    async def run(self, first: int, count: int) -> float:
        """Submit orders first..first+count-1; returns the elapsed seconds."""
        numbers = iter(range(first, first + count))
        async with AsyncExecutionClient(self.target, timeout=TIMEOUT_S) as client:

            async def worker() -> None:
                for i in numbers:
                    started = time.perf_counter()
                    result = await client.submit(order(i), client_order_id=f"load-{i}")
                    self.latencies.append(time.perf_counter() - started)
                    self.statuses.append(result.status)
                    if len(self.statuses) % SAMPLE_EVERY == 0:
                        self.rss_samples.append(rss_kb(self.pid))

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return time.perf_counter() - started


def drain(call: Any) -> tuple[list[ExecutionEvent], StreamEnd]:
    """Read a call to its end: every message it still delivers, then how it ended."""
    events: list[ExecutionEvent] = []
    try:
        for response in call:
            events.append(response.event)
    except grpc.RpcError as e:
        return events, rpc_end(e)
    raise AssertionError(f"the stream ended OK after {len(events)} messages")


@pytest.mark.timeout(120)  # ~30 s on 2 cores; the default 60 s is too tight under load
def test_slow_consumer_is_cut_off_with_a_resume_point_and_nobody_else_suffers(
    server: ServerProcess, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.db"
    target = server.target
    with ExecutionClient(target, timeout=TIMEOUT_S) as client:
        client.wait_ready(TIMEOUT_S)
        assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
    load = Load(target, server.pid)
    asyncio.run(load.run(0, WARM_UP_ORDERS))
    rss_before = rss_kb(server.pid)
    head0 = journal_head(journal)

    # 1. A raw call that reads its first message (the going-live heartbeat), then nothing.
    slow_channel = channel(target, SLOW_CHANNEL)
    slow_call = stub(slow_channel).StreamFills(EVERYTHING.request())
    # 2. The client library's stream, abandoned after its first message the same way;
    #    its backoff sleeps are counted to see it reconnect.
    reconnects: list[float] = []

    def counting_sleep(seconds: float) -> None:
        reconnects.append(seconds)
        time.sleep(seconds)  # the client's own reconnect backoff, not a test wait

    slow_client = ExecutionClient(
        target, timeout=TIMEOUT_S, channel_options=SLOW_CHANNEL, sleep=counting_sleep
    )
    slow_iter = slow_client.stream_fills(
        include_order_updates=True, include_risk_events=True, heartbeats=True
    )
    # 3. A subscriber that reads everything as it comes.
    fast = RawStream(target, EVERYTHING.request(from_sequence=head0 + 1, heartbeat_interval_ms=100))
    try:
        first = next(slow_call).event
        assert first.heartbeat.head_sequence == head0
        client_first = next(slow_iter)
        assert client_first.heartbeat.head_sequence == head0

        elapsed = asyncio.run(load.run(WARM_UP_ORDERS, ORDERS))
        rss_after_load = rss_kb(server.pid)
        head = journal_head(journal)
        produced = head - head0
        expected = expected_sequences(journal, EVERYTHING, after=head0)

        fast_events, _ = fast.until_head(head, timeout=60)
        assert [e.sequence for e in fast_events] == expected, "the reading subscriber lost events"

        # The raw slow call: what the transport still held, then RESOURCE_EXHAUSTED.
        slow_events, end = drain(slow_call)
        assert end.code == grpc.StatusCode.RESOURCE_EXHAUSTED, end
        resume = int(end.trailing[RESUME_KEY])
        assert f"from_sequence={resume}" in end.details
        slow_sequences = [e.sequence for e in slow_events if not e.HasField("heartbeat")]
        assert slow_sequences, "nothing was delivered before the cut-off"
        assert resume == slow_sequences[-1] + 1
        assert resume < head - 10 * QUEUE_SIZE, "cut off only at the end of the burst"
        assert slow_sequences == [s for s in expected if s < resume]
        resumed = RawStream(
            target, EVERYTHING.request(from_sequence=resume, heartbeat_interval_ms=100)
        )
        try:
            rest, _ = resumed.until_head(head, timeout=60)
        finally:
            resumed.close()
        assert_filtered_explains_jumps(rest, resume)
        assert slow_sequences + [e.sequence for e in rest] == expected

        # The client's slow stream: every event once, across its automatic reconnect.
        client_events: list[ExecutionEvent] = []
        for event in slow_iter:
            if event.HasField("heartbeat"):
                if event.heartbeat.head_sequence >= head:
                    break
                continue
            client_events.append(event)
        client_sequences = [e.sequence for e in client_events]
        assert_exactly_once_in_order(client_sequences)
        assert client_sequences == expected
        assert reconnects, "the client's stream was never cut off"
        rss_end = rss_kb(server.pid)
    finally:
        fast.close()
        slow_call.cancel()
        slow_channel.close()
        slow_client.close()

    assert all(status == FILLED for status in load.statuses), set(load.statuses)
    assert len(load.statuses) == WARM_UP_ORDERS + ORDERS
    p50, p99 = percentile(load.latencies, 0.5), percentile(load.latencies, 0.99)
    worst = max(load.latencies)
    rss_peak = max([*load.rss_samples, rss_after_load, rss_end])
    print(
        f"\nslow consumer: {produced} events from {ORDERS} submits in {elapsed:.1f}s "
        f"= {produced / elapsed:.0f} events/s ({ORDERS / elapsed:.0f} submits/s); "
        f"submit latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {worst * 1000:.1f} ms; raw slow call got {len(slow_sequences)} events, "
        f"resume at {resume} of head {head}; client reconnects {len(reconnects)}; "
        f"server RSS before {rss_before // 1024} MiB, "
        f"during {[s // 1024 for s in load.rss_samples]} MiB, "
        f"after load {rss_after_load // 1024} MiB, end {rss_end // 1024} MiB"
    )
    assert produced >= 2 * ORDERS
    assert p99 < 2.0, f"SubmitOrder p99 {p99:.3f}s"
    assert worst < 5.0, f"SubmitOrder max {worst:.3f}s"
    assert rss_peak - rss_before < RSS_GROWTH_LIMIT_KB, (rss_before, rss_peak)


def test_a_subscriber_that_keeps_up_is_not_cut_off_by_one_large_batch(
    tmp_path: Path, clock: ManualClock
) -> None:
    """queue_size bounds how far a subscriber may fall behind. One command can emit more
    events than that at once (a quote crossing many resting orders, a halt cancelling
    them); a subscriber that is reading as fast as it can has not fallen behind and must
    not be cut off (with the default 4096, a quote crossing 5000 resting orders would
    cut off every subscriber at once, and they would all replay together)."""
    running = RunningGateway(
        make_config(tmp_path, stream={"queue_size": 16}, execution=RELAXED_EXECUTION), clock
    )
    reader: RawStream | None = None
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
            reader = RawStream(running.target, EVERYTHING.request(heartbeat_interval_ms=100))
            assert reader.next().HasField("heartbeat")  # live
            resting = [
                client.submit(limit(INFY, "BUY", 1, 1490.0, strategy_code=f"rest{i % 3}"))
                for i in range(20)
            ]
            # Each submit is its own small batch: the reader keeps up with them.
            placed = reader.events(len(resting))
            assert [e.order_update.order_id for e in placed] == [r.order_id for r in resting]
            # One quote, one command: twenty fills published at once.
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1489.0)]) == 1
            head = running.gateway.core.head_sequence
            try:
                fills, _ = reader.until_head(head)
            except AssertionError as e:
                raise AssertionError(
                    f"a subscriber that was keeping up was cut off by one batch of "
                    f"{len(resting)} fills (stream.queue_size 16): {e}"
                ) from None
            assert sorted(e.fill.order_id for e in fills if e.HasField("fill")) == sorted(
                r.order_id for r in resting
            )
    finally:
        if reader is not None:
            reader.close()
        running.stop()
