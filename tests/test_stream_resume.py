"""StreamFills resume semantics: replay from a sequence while orders keep flowing,
automatic reconnect across a gateway restart, gap-free sequences, `filtered`
accounting, OUT_OF_RANGE for history that is gone or not yet written, heartbeats.

What each stream should have delivered is computed from the journal (read-only) with
the filter rules of the proto, independently of the server's filter code. No test
sleeps: each waits on a stream message, an order flow's progress or a condition, with
timeouts that only guard against a hang.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import ExecutionClient, ExecutionEvent, OutOfRange, Quote, limit, market
from execgw.server.api import streaming
from execgw.server.clock import ManualClock
from execgw.server.journal import Journal

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION, free_port, journal_head
    from tests.stream_helpers import (
        EVERYTHING,
        INFY,
        RESUME_KEY,
        TCS,
        TIMEOUT_S,
        ClientFollower,
        OrderFlow,
        RawStream,
        StreamEnd,
        StreamFilter,
        assert_exactly_once_in_order,
        assert_filtered_explains_jumps,
        assert_gap_free_journal,
        expect_stream_error,
        expected_sequences,
        fill_of,
        find_fill,
        journal_rows,
    )
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION, free_port, journal_head
    from stream_helpers import (
        EVERYTHING,
        INFY,
        RESUME_KEY,
        TCS,
        TIMEOUT_S,
        ClientFollower,
        OrderFlow,
        RawStream,
        StreamEnd,
        StreamFilter,
        assert_exactly_once_in_order,
        assert_filtered_explains_jumps,
        assert_gap_free_journal,
        expect_stream_error,
        expected_sequences,
        fill_of,
        find_fill,
        journal_rows,
    )

HEARTBEAT_MS = 100


def config_for(tmp_path: Path, **overrides: Any) -> Any:
    """A test config whose breakers never turn a long order flow into rejects."""
    execution = {**RELAXED_EXECUTION, **overrides.pop("execution", {})}
    return make_config(tmp_path, execution=execution, **overrides)


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(config_for(tmp_path), clock)
    try:
        yield gateway
    finally:
        gateway.stop()


def publish_prices(target: str) -> None:
    with ExecutionClient(target, timeout=TIMEOUT_S) as client:
        # After a restart the process-wide subchannel may still be backing off from the
        # refused connections of the downtime; PublishQuotes is never retried.
        client.wait_ready(TIMEOUT_S)
        quotes = [Quote(symbol=INFY, ltp=1500.0), Quote(symbol=TCS, ltp=4100.0)]
        assert client.publish_quotes(quotes) == 2


def journal_of(running: RunningGateway) -> Path:
    return Path(running.config.journal.path)


# -- 1. resume while orders flow ---------------------------------------------------------


def test_resume_by_hand_while_orders_flow_delivers_every_event_once(
    running: RunningGateway,
) -> None:
    publish_prices(running.target)
    journal = journal_of(running)
    wanted = StreamFilter(strategy_codes=("alpha", "gamma"), include_order_updates=True)
    # A second subscriber, unfiltered, from the very first sequence, never disconnecting.
    everything = RawStream(
        running.target, EVERYTHING.request(from_sequence=1, heartbeat_interval_ms=HEARTBEAT_MS)
    )
    flow = OrderFlow(running.target, total=1_500, threads=3).start()
    received = []
    next_from = 1
    try:
        for _ in range(5):
            # Orders are still being submitted while this subscriber is away...
            flow.wait_for(flow.done + 25)
            stream = RawStream(
                running.target,
                wanted.request(from_sequence=next_from, heartbeat_interval_ms=HEARTBEAT_MS),
            )
            try:
                part = stream.events(40)
            finally:
                stream.close()  # ...and while it reads: disconnect mid-burst
            assert_filtered_explains_jumps(part, next_from)
            received += part
            next_from = part[-1].sequence + 1
        assert flow.done < flow.total, "the flow ended before the last reconnect"
        flow.wait_for(flow.done + 25)
        flow.stop()
        flow.join()
        head = journal_head(journal)
        final = RawStream(
            running.target,
            wanted.request(from_sequence=next_from, heartbeat_interval_ms=HEARTBEAT_MS),
        )
        try:
            rest, heartbeats = final.until_head(head)
        finally:
            final.close()
        assert heartbeats[-1].heartbeat.head_sequence == head
        assert_filtered_explains_jumps(rest, next_from)
        received += rest
        all_events, _ = everything.until_head(head)
    finally:
        flow.stop()
        everything.close()

    sequences = [e.sequence for e in received]
    assert_exactly_once_in_order(sequences)
    # The union of the six connections is exactly what the journal says the filter wants.
    assert sequences == expected_sequences(journal, wanted)
    assert_filtered_explains_jumps(received, 1)
    assert {e.fill.strategy_code for e in received if e.HasField("fill")} == {"alpha", "gamma"}
    # The unfiltered subscriber saw every streamable event of the journal, in order.
    assert [e.sequence for e in all_events] == expected_sequences(journal, EVERYTHING)
    assert_filtered_explains_jumps(all_events, 1)
    assert assert_gap_free_journal(journal) == head
    assert len(received) > 200


def test_client_reconnects_across_a_gateway_restart_and_delivers_every_event_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    port = free_port()
    config = config_for(tmp_path, listen=f"127.0.0.1:{port}")
    journal = Path(config.journal.path)
    first = RunningGateway(config, clock)
    second: RunningGateway | None = None
    first_stopped = False
    follower: ClientFollower | None = None
    flow: OrderFlow | None = None
    try:
        assert first.port == port
        publish_prices(first.target)
        follower = ClientFollower(
            first.target, from_sequence=1, include_order_updates=True, include_risk_events=True
        )
        # Orders flow from other threads the whole time, through the restart too.
        flow = OrderFlow(first.target, total=600, threads=3, tolerate_errors=True).start()
        follower.wait_until(lambda events: len(events) >= 120)

        first.stop()
        first_stopped = True
        head_before = journal_head(journal)
        second = RunningGateway(config, clock)  # same journal, same port
        assert second.port == port
        assert second.gateway.core.bus.head == head_before
        publish_prices(second.target)
        # The follower reconnected by itself and is past the restart.
        follower.wait_until(lambda events: events[-1].sequence > head_before if events else False)
        flow.join()
        with ExecutionClient(second.target, timeout=TIMEOUT_S) as client:
            sentinel = client.submit(market(INFY, "BUY", 1, strategy_code="sentinel"))
        events = follower.wait_until(fill_of(sentinel.order_id))
        last = find_fill(events, sentinel.order_id).sequence
        head = journal_head(journal)
    finally:
        if follower is not None:
            follower.close()
        if flow is not None:
            flow.stop()
        if not first_stopped:
            first.stop()
        if second is not None:
            second.stop()

    delivered = [e.sequence for e in events if e.sequence <= last]
    assert_exactly_once_in_order([e.sequence for e in events])
    assert delivered == expected_sequences(journal, EVERYTHING, upto=last)
    # Nothing streamable was journaled after the sentinel's fill.
    assert expected_sequences(journal, EVERYTHING, after=last) == []
    assert_filtered_explains_jumps([e for e in events if e.sequence <= last], 1)
    assert assert_gap_free_journal(journal) == head
    # The restarted gateway went on at head + 1.
    after_restart = [s for s in delivered if s > head_before]
    assert after_restart[0] == expected_sequences(journal, EVERYTHING, after=head_before)[0]
    assert int(journal_rows(journal)[head_before]["sequence"]) == head_before + 1
    assert len([s for s in delivered if s <= head_before]) >= 120
    assert flow.done > 0


# -- 2. gap-free sequences, `filtered` explains every jump -----------------------------


FILTERS = [
    EVERYTHING,
    StreamFilter(),  # fills only
    StreamFilter(strategy_codes=("alpha",), include_order_updates=True),
    StreamFilter(symbols=(TCS,)),
    StreamFilter(strategy_codes=("beta", "gamma"), symbols=(INFY,), include_risk_events=True),
    StreamFilter(strategy_codes=("beta",), include_risk_events=True),
    StreamFilter(strategy_codes=("nobody",)),
]


def make_history(target: str, prefix: str) -> list[str]:
    """Fills, resting and cancelled orders, a reject, halts and resumes; returns order ids."""
    ids = []
    with ExecutionClient(target, timeout=TIMEOUT_S) as client:
        for i, (code, symbol) in enumerate(
            [("alpha", INFY), ("beta", TCS), ("gamma", INFY), ("alpha", TCS), ("beta", INFY)]
        ):
            ids.append(
                client.submit(
                    market(symbol, "BUY", 1 + i, strategy_code=code), f"{prefix}-m{i}"
                ).order_id
            )
        resting = client.submit(limit(INFY, "BUY", 2, 1400.0, strategy_code="gamma"))
        client.cancel(resting.order_id)
        ids.append(resting.order_id)
        ids.append(client.submit(market("NSE:SBIN", "BUY", 1, strategy_code="alpha")).order_id)
        client.halt("test halt", actor="tester", strategy_code="beta")
        client.resume("test resume", actor="tester", strategy_code="beta")
        client.halt("account halt", actor="tester")
        client.resume("account resume", actor="tester")
    return ids


def test_sequences_are_gap_free_across_restarts_and_filtered_explains_every_jump(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = config_for(tmp_path)
    journal = Path(config.journal.path)
    first = RunningGateway(config, clock)
    try:
        publish_prices(first.target)
        make_history(first.target, "a")
        head_before = first.gateway.core.head_sequence
    finally:
        first.stop()
    assert journal_head(journal) == head_before

    second = RunningGateway(config, clock)
    live: list[tuple[StreamFilter, RawStream]] = []
    try:
        assert second.gateway.core.bus.head == head_before
        # Live-only subscribers (from_sequence 0) see the restarted gateway's events.
        live = [
            (f, RawStream(second.target, f.request(heartbeat_interval_ms=HEARTBEAT_MS)))
            for f in FILTERS
        ]
        for _, stream in live:
            going_live = stream.next()
            assert going_live.HasField("heartbeat")
            assert going_live.heartbeat.head_sequence == head_before
        publish_prices(second.target)
        make_history(second.target, "b")
        head = second.gateway.core.head_sequence
        assert assert_gap_free_journal(journal) == head
        first_after = journal_rows(journal)[head_before]
        assert int(first_after["sequence"]) == head_before + 1

        for wanted, stream in live:
            events, heartbeats = stream.until_head(head)
            assert heartbeats[-1].heartbeat.head_sequence == head
            assert [e.sequence for e in events] == expected_sequences(
                journal, wanted, after=head_before
            ), wanted
            assert_filtered_explains_jumps(events, head_before + 1)

        # Replays from sequence 1 cross the restart with the same accounting.
        for wanted in FILTERS:
            replay = RawStream(
                second.target, wanted.request(from_sequence=1, heartbeat_interval_ms=HEARTBEAT_MS)
            )
            try:
                events, heartbeats = replay.until_head(head)
            finally:
                replay.close()
            assert heartbeats[0].heartbeat.head_sequence == head  # going live
            assert [e.sequence for e in events] == expected_sequences(journal, wanted), wanted
            assert_filtered_explains_jumps(events, 1)
            assert all(e.sequence != 0 for e in events)
    finally:
        for _, stream in live:
            stream.close()
        second.stop()


# -- 3. OUT_OF_RANGE ---------------------------------------------------------------------


def settle_retention(running: RunningGateway, client: ExecutionClient) -> None:
    """The core starts a snapshot (and its pruning) after answering a batch's callers,
    and writes it off the writer; a read goes through the same single writer, so once it
    is answered every snapshot due has been started: then wait for it to be written."""
    client.list_orders(strategy_code="nobody")
    running.call(running.gateway.core.snapshot_written())


def oldest_retained(journal: Path) -> int:
    reader = Journal(journal, read_only=True)
    try:
        return reader.oldest_sequence()
    finally:
        reader.close()


def test_out_of_range_names_the_oldest_retained_sequence_or_the_head(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = config_for(tmp_path, journal={"snapshot_every": 5, "retain_events": 10})
    journal = Path(config.journal.path)
    running = RunningGateway(config, clock)
    try:
        publish_prices(running.target)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            for i in range(20):
                client.submit(market(INFY, "BUY" if i % 2 else "SELL", 1, strategy_code="old"))
            settle_retention(running, client)
            head = running.gateway.core.head_sequence
            oldest = oldest_retained(journal)
            assert head >= 40
            assert 1 < oldest <= head - 9, (oldest, head)

            for start in (1, oldest - 1):
                end = expect_stream_error(running.target, EVERYTHING.request(from_sequence=start))
                assert end.code == grpc.StatusCode.OUT_OF_RANGE, end
                assert f"oldest sequence available is {oldest}" in end.details, end
                assert end.trailing.get(RESUME_KEY) == str(oldest), end

            # The client does not loop on it: OUT_OF_RANGE is raised to the caller.
            with pytest.raises(OutOfRange) as raised:
                next(iter(client.stream_fills(from_sequence=1, include_order_updates=True)))
            assert str(oldest) in raised.value.details

            # From the oldest retained sequence itself: everything from there, in order.
            stream = RawStream(
                running.target,
                EVERYTHING.request(from_sequence=oldest, heartbeat_interval_ms=HEARTBEAT_MS),
            )
            try:
                events, heartbeats = stream.until_head(head)
            finally:
                stream.close()
            assert heartbeats[0].heartbeat.head_sequence == head
            assert [e.sequence for e in events] == expected_sequences(journal, EVERYTHING)
            assert events[0].sequence == oldest
            assert_filtered_explains_jumps(events, oldest)

            # head + 1 is "live from the next event": a heartbeat first, no error.
            stream = RawStream(
                running.target,
                EVERYTHING.request(from_sequence=head + 1, heartbeat_interval_ms=HEARTBEAT_MS),
            )
            try:
                first = stream.next()
            finally:
                stream.close()
            assert first.HasField("heartbeat")
            assert first.heartbeat.head_sequence == head

            for start in (head + 2, head + 1_000):
                end = expect_stream_error(running.target, EVERYTHING.request(from_sequence=start))
                assert end.code == grpc.StatusCode.OUT_OF_RANGE, end
                assert f"beyond the head sequence {head}" in end.details, end
    finally:
        running.stop()


def test_history_pruned_during_a_replay_is_reported_not_skipped(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay reads the journal in batches. If retention prunes the rows it has not
    read yet, the stream must end with OUT_OF_RANGE (resume point in the trailers), not
    jump over the pruned events and count them as `filtered`."""
    config = config_for(
        tmp_path,
        journal={"snapshot_every": 5, "retain_events": 10},
        execution={"slippage_bps": 0.0},  # flat round trips: no EquityPeak events
    )
    journal = Path(config.journal.path)
    running = RunningGateway(config, clock)
    monkeypatch.setattr(streaming, "REPLAY_BATCH", 3)
    blocked = threading.Event()
    release = threading.Event()
    original = Journal.records_after
    replay_reads = 0

    def gated(self: Journal, sequence: int, limit_: int) -> list[Any]:
        nonlocal replay_reads
        if self is not running.gateway.journal:  # a stream's read-only journal
            replay_reads += 1
            if replay_reads == 2:  # the replay has sent its first batch
                blocked.set()
                assert release.wait(TIMEOUT_S)
        return original(self, sequence, limit_)

    monkeypatch.setattr(Journal, "records_after", gated)
    stream: RawStream | None = None
    watcher: RawStream | None = None
    try:
        publish_prices(running.target)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            for i in range(10):
                client.submit(market(INFY, "BUY" if i % 2 else "SELL", 1, strategy_code="p"))
            settle_retention(running, client)
            oldest = oldest_retained(journal)
            stream = RawStream(
                running.target,
                EVERYTHING.request(from_sequence=oldest, heartbeat_interval_ms=HEARTBEAT_MS),
            )
            assert blocked.wait(TIMEOUT_S), "the replay never read a second batch"
            watcher = RawStream(
                running.target, EVERYTHING.request(heartbeat_interval_ms=HEARTBEAT_MS)
            )
            assert watcher.next().HasField("heartbeat")
            for i in range(10):
                client.submit(market(INFY, "BUY" if i % 2 else "SELL", 1, strategy_code="p"))
            settle_retention(running, client)
            head = running.gateway.core.head_sequence
            # Every event in between is streamable (watched live, nothing filtered)...
            live, _ = watcher.until_head(head)
            assert all(e.filtered == 0 for e in live)
            # ...and retention has pruned rows the blocked replay has not read yet.
            assert oldest_retained(journal) > oldest + 3
            release.set()
            messages, end = _until_head_or_end(stream, head)
    finally:
        release.set()
        for s in (stream, watcher):
            if s is not None:
                s.close()
        running.stop()

    events = [m for m in messages if not m.HasField("heartbeat")]
    delivered = [e.sequence for e in events]
    assert_exactly_once_in_order(delivered)
    jumps = [(e.sequence, e.filtered) for e in events if e.filtered]
    assert not jumps, (
        f"the replay from {oldest} skipped pruned events and reported them as filtered: "
        f"(sequence, filtered) = {jumps}; delivered {delivered}; stream end: {end}"
    )
    if end is not None:
        assert end.code == grpc.StatusCode.OUT_OF_RANGE, end
        assert RESUME_KEY in end.trailing, end
    else:
        assert delivered == list(range(oldest, head + 1))


def _until_head_or_end(
    stream: RawStream, head: int
) -> tuple[list[ExecutionEvent], StreamEnd | None]:
    """Messages until a heartbeat at `head` (end None) or until the stream ends."""
    messages: list[ExecutionEvent] = []
    while True:
        try:
            message = stream.next()
        except AssertionError:
            rest, end = stream.end()
            return messages + rest, end
        messages.append(message)
        if message.HasField("heartbeat") and message.heartbeat.head_sequence >= head:
            return messages, None


# -- 4. heartbeats -------------------------------------------------------------------------


def test_idle_stream_gets_heartbeats_carrying_the_head(running: RunningGateway) -> None:
    publish_prices(running.target)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        for i in range(3):
            client.submit(market(INFY, "BUY", 1 + i, strategy_code="hb"))
        head = running.gateway.core.head_sequence

        replay = RawStream(
            running.target, EVERYTHING.request(from_sequence=1, heartbeat_interval_ms=HEARTBEAT_MS)
        )
        quiet = RawStream(
            running.target,
            StreamFilter(strategy_codes=("nobody",)).request(heartbeat_interval_ms=HEARTBEAT_MS),
        )
        try:
            # Replayed events first, then the heartbeat that marks going live.
            replayed = []
            while not (message := replay.next()).HasField("heartbeat"):
                replayed.append(message)
            assert [e.sequence for e in replayed] == expected_sequences(
                journal_of(running), EVERYTHING
            )
            assert message.sequence == 0
            assert message.heartbeat.head_sequence == head
            # Idle: more heartbeats, each still at the head.
            idle = [replay.next() for _ in range(3)]
            assert all(m.HasField("heartbeat") for m in idle), idle
            assert [m.heartbeat.head_sequence for m in idle] == [head] * 3

            # A live-only stream's first message is the going-live heartbeat too.
            going_live = quiet.next()
            assert going_live.HasField("heartbeat")
            assert going_live.heartbeat.head_sequence == head

            order = client.submit(market(INFY, "SELL", 1, strategy_code="hb"))
            new_head = running.gateway.core.head_sequence
            after: list[Any] = []
            while len([m for m in after if not m.HasField("heartbeat")]) < 2:
                after.append(replay.next())
            events = [m for m in after if not m.HasField("heartbeat")]
            assert [e.order_update.order_id for e in events[:1]] == [order.order_id]
            assert events[1].fill.order_id == order.order_id
            assert all(m.heartbeat.head_sequence == head for m in after if m.HasField("heartbeat"))
            next_beat = replay.next()
            assert next_beat.HasField("heartbeat")
            assert next_beat.heartbeat.head_sequence == new_head

            # Everything was filtered out for `quiet`, yet its heartbeat moves to the new
            # head: a reconnect from head_sequence + 1 loses nothing and replays nothing.
            while (beat := quiet.next()).heartbeat.head_sequence < new_head:
                assert beat.HasField("heartbeat"), beat
            assert beat.HasField("heartbeat")
            assert beat.heartbeat.head_sequence == new_head
        finally:
            replay.close()
            quiet.close()

        # Through the client: heartbeats only when asked for, the first one going live.
        first = next(iter(client.stream_fills(include_order_updates=True, heartbeats=True)))
        # (the generator is dropped here, which cancels its call)
        assert first.HasField("heartbeat")
        assert first.heartbeat.head_sequence == new_head

        # 50 ms is the smallest interval allowed.
        fastest = RawStream(running.target, EVERYTHING.request(heartbeat_interval_ms=50))
        try:
            beats = [fastest.next() for _ in range(3)]
        finally:
            fastest.close()
        assert all(b.heartbeat.head_sequence == new_head for b in beats)


@pytest.mark.parametrize("interval_ms", [1, 10, 49])
def test_heartbeat_interval_below_the_minimum_is_invalid(
    running: RunningGateway, interval_ms: int
) -> None:
    end = expect_stream_error(running.target, EVERYTHING.request(heartbeat_interval_ms=interval_ms))
    assert end.code == grpc.StatusCode.INVALID_ARGUMENT, end
    assert "heartbeat_interval_ms" in end.details, end


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_events_committed_as_the_idle_timer_fires_are_not_skipped(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's loop is busy (a long batch, a GC pause, many streams writing) for
    longer than the heartbeat interval just as a journal commit completes: the stream's
    idle timer and the commit's publish fall due together. The heartbeat must not claim
    a head whose events are still queued for this stream (it would then skip them, and a
    client resuming from head_sequence + 1 would never see them)."""
    running = RunningGateway(config_for(tmp_path), clock)
    loop = running.call(_running_loop())
    journal = running.gateway.journal
    original_append = journal.append
    stall_after_commit = threading.Event()

    def append(records: list[Any]) -> None:
        original_append(records)
        if stall_after_commit.is_set():
            stall_after_commit.clear()
            # Models the loop being busy for 3x the heartbeat interval. This stalls the
            # gateway's loop on purpose; the test itself waits only on the stream.
            loop.call_soon_threadsafe(time.sleep, 3 * 50 / 1000)

    monkeypatch.setattr(journal, "append", append)
    stream: RawStream | None = None
    try:
        publish_prices(running.target)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            stream = RawStream(running.target, EVERYTHING.request(heartbeat_interval_ms=50))
            missed = []
            for attempt in range(5):
                # Idle: the stream is waiting for its next event with the timer armed.
                assert stream.next().HasField("heartbeat")
                assert stream.next().HasField("heartbeat")
                stall_after_commit.set()
                order = client.submit(market(INFY, "BUY", 1, strategy_code="race"))
                head = running.gateway.core.head_sequence
                events, beats = stream.until_head(head)
                ids = [e.order_update.order_id or e.fill.order_id for e in events]
                if ids != [order.order_id, order.order_id]:
                    missed.append((attempt, order.order_id, head, ids, beats[-1].heartbeat))
            assert not missed, (
                "a heartbeat claimed the head while the order's events were still queued, "
                f"and they were never sent: {missed}"
            )
    finally:
        if stream is not None:
            stream.close()
        running.stop()
