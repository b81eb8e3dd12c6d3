"""Helpers for the fill-streaming suites (resume, slow consumer, fan-out, CLI).

Nothing here sleeps on wall time. Streams are read in threads that hand events over
queues; order flows report progress through a Condition; the number of live
subscriptions is watched through the bus's own subscribe/unsubscribe. Every timeout
is a guard against a hang, never a way to let something happen.

What a stream should have delivered is computed from the journal (read-only, through
`execgw journal export`'s in-process twin), with the filter rules written out here
independently of the server's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import ExecgwError, ExecutionClient, ExecutionEvent, OrderIntent, market
from execgw.server.api.streaming import FillStream
from execgw.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
    from tests.durability_helpers import read_events
else:
    from conftest import RunningGateway
    from durability_helpers import read_events

INFY = "NSE:INFY"
TCS = "NSE:TCS"
# Guards against a hang; never a way to wait for something to happen.
TIMEOUT_S = 20.0
RESUME_KEY = "execgw-resume-from"

ORDER_UPDATE_KINDS = frozenset(
    {"OrderAccepted", "OrderRejected", "OrderTriggered", "OrderCancelled"}
)
RISK_KINDS = frozenset(
    {"BreakerTripped", "TradingHalted", "TradingResumed", "DayRolledOver", "MisSquareOffStarted"}
)


# -- what a stream should deliver ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """The filter fields of a StreamFillsRequest, applied to journal export rows."""

    strategy_codes: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    include_order_updates: bool = False
    include_risk_events: bool = False

    def request(
        self, from_sequence: int = 0, heartbeat_interval_ms: int = 0
    ) -> gateway_pb2.StreamFillsRequest:
        return gateway_pb2.StreamFillsRequest(
            strategy_codes=list(self.strategy_codes),
            symbols=list(self.symbols),
            from_sequence=from_sequence,
            include_order_updates=self.include_order_updates,
            include_risk_events=self.include_risk_events,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )

    def wants(self, row: Mapping[str, Any]) -> bool:
        """Whether a journal export row is an event this stream must deliver."""
        kind = row["kind"]
        if kind in RISK_KINDS:
            # Risk events have no symbol; account-wide ones concern every strategy.
            scope = row["event"].get("strategy_code", "")
            return self.include_risk_events and (
                not self.strategy_codes or not scope or scope in self.strategy_codes
            )
        if kind == "OrderFilled":
            payload_wanted = True
        elif kind in ORDER_UPDATE_KINDS:
            payload_wanted = self.include_order_updates
        else:
            return False  # EquityPeak: restart bookkeeping, never streamed
        intent = row["order"]["intent"]
        return (
            payload_wanted
            and (not self.strategy_codes or intent["strategy_code"] in self.strategy_codes)
            and (not self.symbols or intent["symbol"] in self.symbols)
        )


EVERYTHING = StreamFilter(include_order_updates=True, include_risk_events=True)


def journal_rows(journal: Path) -> list[dict[str, Any]]:
    """Every retained journal row, as `execgw journal export --format jsonl` writes it."""
    return read_events(journal)


def expected_sequences(
    journal: Path, wanted: StreamFilter, *, after: int = 0, upto: int | None = None
) -> list[int]:
    """Sequences in (after, upto] that a stream with this filter must deliver."""
    return [
        int(row["sequence"])
        for row in journal_rows(journal)
        if int(row["sequence"]) > after
        and (upto is None or int(row["sequence"]) <= upto)
        and wanted.wants(row)
    ]


def assert_gap_free_journal(journal: Path) -> int:
    """The journal holds exactly the sequences 1..head; returns head."""
    sequences = [int(row["sequence"]) for row in journal_rows(journal)]
    assert sequences == list(range(1, len(sequences) + 1)), "journal sequences have a gap"
    return len(sequences)


def payload_kind(event: ExecutionEvent) -> str:
    kind = event.WhichOneof("payload")
    assert kind is not None, event
    return kind


def assert_exactly_once_in_order(sequences: Sequence[int]) -> None:
    duplicates = sorted({s for s in sequences if sequences.count(s) > 1}) if sequences else []
    assert not duplicates, f"delivered more than once: {duplicates[:20]}"
    assert all(a < b for a, b in pairwise(sequences)), "sequences not strictly increasing"


def assert_filtered_explains_jumps(events: Sequence[ExecutionEvent], from_sequence: int) -> None:
    """Each event's `filtered` accounts for the jump from the one before (or from the
    replay start for the first): sequence == previous + filtered + 1."""
    previous = from_sequence - 1
    for event in events:
        assert event.sequence == previous + event.filtered + 1, (
            f"sequence {event.sequence} after {previous} with filtered={event.filtered}"
        )
        previous = event.sequence


# -- raw StreamFills calls, read in a thread -------------------------------------------


def channel(target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    return grpc.insecure_channel(target, options=list(options))


def stub(ch: grpc.Channel) -> gateway_pb2_grpc.ExecutionGatewayStub:
    return gateway_pb2_grpc.ExecutionGatewayStub(ch)


@dataclass(slots=True)
class StreamEnd:
    """How a raw stream ended: None code means OK."""

    code: grpc.StatusCode | None
    details: str
    trailing: dict[str, str]


def rpc_end(error: grpc.RpcError) -> StreamEnd:
    call: Any = error  # a grpc.Call at runtime
    trailing = {str(k): str(v) for k, v in (call.trailing_metadata() or ())}
    return StreamEnd(call.code(), str(call.details() or ""), trailing)


class RawStream:
    """A StreamFills call on its own channel, drained by a thread into a queue, so the
    server never sees this subscriber as slow. Heartbeats are kept (they end reads)."""

    def __init__(
        self,
        target: str,
        request: gateway_pb2.StreamFillsRequest,
        *,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.request = request
        self._channel = channel(target, options)
        self.call = stub(self._channel).StreamFills(request)
        self._items: queue.Queue[ExecutionEvent | StreamEnd] = queue.Queue()
        self.received = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            for response in self.call:
                self._items.put(response.event)
        except grpc.RpcError as e:
            self._items.put(rpc_end(e))
        else:
            self._items.put(StreamEnd(None, "", {}))

    def next(self, timeout: float = TIMEOUT_S) -> ExecutionEvent:
        """The next message, heartbeat or event; fails if the stream ended."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream message within {timeout}s") from None
        if isinstance(item, StreamEnd):
            self._items.put(item)  # stays ended
            raise AssertionError(f"the stream ended: {item}")
        return item

    def events(self, count: int, timeout: float = TIMEOUT_S) -> list[ExecutionEvent]:
        """The next `count` events, heartbeats skipped."""
        out: list[ExecutionEvent] = []
        while len(out) < count:
            message = self.next(timeout)
            if not message.HasField("heartbeat"):
                out.append(message)
        return out

    def until_head(
        self, head: int, timeout: float = TIMEOUT_S
    ) -> tuple[list[ExecutionEvent], list[ExecutionEvent]]:
        """Events, and the heartbeats seen, until a heartbeat says everything up to
        `head` was sent or filtered out."""
        events: list[ExecutionEvent] = []
        heartbeats: list[ExecutionEvent] = []
        while True:
            message = self.next(timeout)
            if message.HasField("heartbeat"):
                heartbeats.append(message)
                if message.heartbeat.head_sequence >= head:
                    return events, heartbeats
            else:
                events.append(message)

    def end(self, timeout: float = TIMEOUT_S) -> tuple[list[ExecutionEvent], StreamEnd]:
        """Every message until the stream ends, and how it ended."""
        seen: list[ExecutionEvent] = []
        while True:
            try:
                item = self._items.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the stream did not end within {timeout}s") from None
            if isinstance(item, StreamEnd):
                return seen, item
            seen.append(item)

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(timeout=TIMEOUT_S)
        self._channel.close()


def expect_stream_error(
    target: str, request: gateway_pb2.StreamFillsRequest, timeout: float = TIMEOUT_S
) -> StreamEnd:
    """Open a stream that must fail before sending anything; return how it failed."""
    with channel(target) as ch:
        call = stub(ch).StreamFills(request, timeout=timeout)
        try:
            first = next(call)
        except grpc.RpcError as e:
            return rpc_end(e)
        finally:
            call.cancel()
    raise AssertionError(f"expected the stream to fail, got {first}")


# -- orders flowing from other threads ------------------------------------------------


def flow_intent(i: int, strategies: Sequence[str], symbols: Sequence[str]) -> OrderIntent:
    """Order number i of a flow: strategies and symbols in turn, BUY then SELL, so
    positions stay near flat."""
    code = strategies[i % len(strategies)]
    symbol = symbols[(i // len(strategies)) % len(symbols)]
    side = "BUY" if (i // (len(strategies) * len(symbols))) % 2 == 0 else "SELL"
    return market(symbol, side, 1, strategy_code=code)


@dataclass
class OrderFlow:
    """`threads` threads submitting MARKET orders (each through its own client) until
    `total` have been submitted or `stop()` is called. Progress is observable through
    `wait_for(done)`; with `tolerate_errors`, failed submits (a gateway restarting) are
    counted and the flow goes on."""

    target: str
    total: int
    threads: int = 3
    strategies: Sequence[str] = ("alpha", "beta", "gamma")
    symbols: Sequence[str] = (INFY, TCS)
    tolerate_errors: bool = False
    done: int = 0
    failed: list[ExecgwError] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _next: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _workers: list[threading.Thread] = field(default_factory=list)
    _crash: list[BaseException] = field(default_factory=list)

    def start(self) -> OrderFlow:
        for n in range(self.threads):
            worker = threading.Thread(target=self._work, name=f"flow-{n}", daemon=True)
            self._workers.append(worker)
            worker.start()
        return self

    def _take(self) -> int | None:
        with self._cond:
            if self._stop.is_set() or self._next >= self.total:
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        try:
            with ExecutionClient(self.target, timeout=TIMEOUT_S) as client:
                while (i := self._take()) is not None:
                    intent = flow_intent(i, self.strategies, self.symbols)
                    started = time.perf_counter()
                    try:
                        client.submit(intent, client_order_id=f"flow-{i}")
                    except ExecgwError as e:
                        if not self.tolerate_errors:
                            raise
                        with self._cond:
                            self.failed.append(e)
                        continue
                    elapsed = time.perf_counter() - started
                    with self._cond:
                        self.done += 1
                        self.latencies.append(elapsed)
                        self._cond.notify_all()
        except BaseException as e:  # surfaced by join()
            with self._cond:
                self._crash.append(e)
                self._cond.notify_all()
        finally:
            with self._cond:
                self._cond.notify_all()

    def _finished(self) -> bool:
        return bool(self._crash) or not any(w.is_alive() for w in self._workers)

    def wait_for(self, done: int, timeout: float = TIMEOUT_S) -> None:
        """Block until `done` submits succeeded (or the flow ended or crashed)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.done >= done or self._crash, timeout)
            if self._crash:
                raise AssertionError(f"order flow failed: {self._crash[0]!r}") from self._crash[0]
            assert ok, f"order flow reached only {self.done} of {done} within {timeout}s"

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
            assert not worker.is_alive(), "order flow did not finish"
        if self._crash:
            raise AssertionError(f"order flow failed: {self._crash[0]!r}") from self._crash[0]


# -- watching the bus -----------------------------------------------------------------


class BusWatch:
    """Counts StreamFills subscriptions on the gateway's event bus, and StreamFills
    handlers still running (a stream replaying the journal has not subscribed yet),
    and wakes waiters whenever either changes, so tests wait on the counts themselves."""

    def __init__(self, running: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self._bus = running.gateway.core.bus
        original: Callable[..., Any] = self._bus.subscribe
        self._cond = threading.Condition()
        self.subscribed = 0
        self.handlers = 0

        def subscribe(*args: Any, **kwargs: Any) -> Any:
            subscription = original(*args, **kwargs)
            unsubscribe: Callable[[], None] = subscription.unsubscribe

            def unsubscribe_and_notify() -> None:
                unsubscribe()
                with self._cond:
                    self._cond.notify_all()

            setattr(subscription, "unsubscribe", unsubscribe_and_notify)  # noqa: B010
            with self._cond:
                self.subscribed += 1
                self._cond.notify_all()
            return subscription

        monkeypatch.setattr(self._bus, "subscribe", subscribe)

        run: Callable[..., AsyncIterator[Any]] = FillStream.run

        def counted_run(stream: FillStream, context: Any) -> AsyncIterator[Any]:
            async def counted() -> AsyncIterator[Any]:
                with self._cond:
                    self.handlers += 1
                try:
                    async for response in run(stream, context):
                        yield response
                finally:
                    with self._cond:
                        self.handlers -= 1
                        self._cond.notify_all()

            return counted()

        monkeypatch.setattr(FillStream, "run", counted_run)

    @property
    def count(self) -> int:
        return self._bus.subscriber_count

    def wait_subscribed(self, total: int, timeout: float = TIMEOUT_S) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.subscribed >= total, timeout), (
                f"only {self.subscribed} of {total} subscriptions within {timeout}s"
            )

    def wait_count(self, count: int, timeout: float = TIMEOUT_S) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.count == count, timeout), (
                f"bus still has {self.count} subscribers (want {count}) after {timeout}s"
            )

    def wait_idle(self, timeout: float = TIMEOUT_S) -> None:
        """No subscription on the bus and no StreamFills handler still running."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.count == 0 and self.handlers == 0, timeout), (
                f"{self.count} subscribers and {self.handlers} StreamFills handlers remain "
                f"after {timeout}s"
            )


# -- process measurements --------------------------------------------------------------


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size from /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    assert ordered, "no values"
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# -- the client's own stream_fills, followed in a thread -----------------------------


class ClientFollower:
    """`ExecutionClient.stream_fills` iterated in a thread (reconnecting unless told
    otherwise); events collect in `events`, and tests wait on conditions over them."""

    def __init__(
        self,
        target: str,
        *,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        **stream_kwargs: Any,
    ) -> None:
        self._client = ExecutionClient(target, timeout=TIMEOUT_S, channel_options=channel_options)
        self._iterator = self._client.stream_fills(**stream_kwargs)
        self.events: list[ExecutionEvent] = []
        self.error: BaseException | None = None
        self.ended = False
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._iterator:
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        except BaseException as e:
            if not self._closing.is_set():
                with self._cond:
                    self.error = e
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait_until(
        self, predicate: Callable[[list[ExecutionEvent]], bool], timeout: float = TIMEOUT_S
    ) -> list[ExecutionEvent]:
        """Block until predicate(events) holds; returns a copy of the events."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self.events) or self.ended, timeout)
            if predicate(self.events):
                return list(self.events)
            if self.error is not None:
                raise AssertionError(f"the stream failed: {self.error!r}") from self.error
            raise AssertionError(
                f"condition not met within {timeout}s ({len(self.events)} events, "
                f"ended={self.ended})"
            )

    def close(self) -> None:
        self._closing.set()
        self._client.close()
        self._thread.join(timeout=TIMEOUT_S)


def fill_of(order_id: str) -> Callable[[list[ExecutionEvent]], bool]:
    """Predicate: the fill of this order has been received."""

    def seen(events: list[ExecutionEvent]) -> bool:
        return any(e.HasField("fill") and e.fill.order_id == order_id for e in events)

    return seen


def find_fill(events: Iterable[ExecutionEvent], order_id: str) -> ExecutionEvent:
    return next(e for e in events if e.HasField("fill") and e.fill.order_id == order_id)
