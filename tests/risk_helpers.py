"""Helpers for the risk-control tests: a gateway plus a blocking client, driven by a
ManualClock, and a reader for the event stream.

Nothing here sleeps on wall time. The background ticker is pushed out to 60 s so it
never fires during a test: time-driven events (rollover, MIS square-off) happen only
when a test calls `tick()` (or sends a command) after moving the clock. Slippage is 0
by default so every price and PnL below is plain arithmetic on the LTP.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from execgw.client import (
    ExecgwError,
    ExecutionClient,
    ExecutionEvent,
    ExecutionResult,
    OrderIntent,
    OrderStatus,
    Quote,
    RejectReason,
    limit,
    market,
)
from execgw.server.clock import ManualClock
from execgw.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
else:
    from conftest import RunningGateway, make_config

INFY = "NSE:INFY"
TCS = "NSE:TCS"
IST = ZoneInfo("Asia/Kolkata")
# Guards against a hang; never a way to wait for something to happen.
TIMEOUT_S = 10.0

PLACED = OrderStatus.ORDER_STATUS_PLACED
FILLED = OrderStatus.ORDER_STATUS_FILLED
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED
REJECTED = OrderStatus.ORDER_STATUS_REJECTED

BreakerStatus = gateway_pb2.BreakerStatus
RiskState = gateway_pb2.GetRiskStateResponse
StrategyRiskState = gateway_pb2.StrategyRiskState


def ist(year: int, month: int, day: int, hour: int, minute: int, second: float = 0) -> datetime:
    """A wall-clock time in Asia/Kolkata (UTC+05:30 all year)."""
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return datetime(year, month, day, hour, minute, whole, micro, tzinfo=IST)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def risk_overrides(**overrides: Any) -> dict[str, Any]:
    """make_config overrides: no slippage, no background ticks, then the test's own."""
    base: dict[str, Any] = {
        "trading_day": {"tick_interval_s": 60.0},
        "execution": {"slippage_bps": 0.0},
    }
    return merge(base, overrides)


class Harness:
    """A RunningGateway on `tmp_path`'s journal, a blocking client, and shortcuts."""

    def __init__(self, tmp_path: Path, clock: ManualClock, **overrides: Any) -> None:
        self.config = make_config(tmp_path, **risk_overrides(**overrides))
        self.clock = clock
        self.running = RunningGateway(self.config, clock)
        self.client = ExecutionClient(self.running.target, timeout=TIMEOUT_S)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self.running.stop()

    def restart(self) -> None:
        """Stop the gateway and start a new one on the same journal (and clock)."""
        self.close()
        self.running = RunningGateway(self.config, self.clock)
        self.client = ExecutionClient(self.running.target, timeout=TIMEOUT_S)

    # -- time and market ---------------------------------------------------

    def tick(self) -> None:
        """Let the gateway notice the time: rollover, square-off, breakers."""
        self.running.call(self.running.gateway.core.tick())

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    def publish(self, symbol: str, *ltps: float) -> None:
        quotes = [Quote(symbol=symbol, ltp=ltp) for ltp in ltps]
        assert self.client.publish_quotes(quotes) == len(ltps)

    # -- orders -------------------------------------------------------------

    def submit(self, intent: OrderIntent) -> ExecutionResult:
        return self.client.submit(intent)

    def mkt(
        self,
        side: str,
        qty: int,
        *,
        symbol: str = INFY,
        strategy: str = "S1",
        product: str = "NRML",
        confidence: float | None = None,
    ) -> ExecutionResult:
        return self.submit(
            market(
                symbol,
                side,
                qty,
                strategy_code=strategy,
                product=product,
                confidence=confidence,
            )
        )

    def lmt(
        self,
        side: str,
        qty: int,
        price: float,
        *,
        symbol: str = INFY,
        strategy: str = "S1",
        product: str = "NRML",
    ) -> ExecutionResult:
        return self.submit(limit(symbol, side, qty, price, strategy_code=strategy, product=product))

    def state(self, strategy: str | None = None) -> RiskState:
        return self.client.risk_state(strategy)

    def net_qty(self, strategy: str, symbol: str = INFY) -> int:
        return sum(p.net_qty for p in self.client.positions(strategy) if p.symbol == symbol)

    @contextmanager
    def stream(self, **kwargs: Any) -> Iterator[EventReader]:
        """An event stream whose subscription is live on the server when the block starts."""
        bus = self.running.gateway.core.bus
        original: Callable[..., Any] = bus.subscribe
        registered = threading.Semaphore(0)

        def subscribe(*args: Any, **kw: Any) -> Any:
            subscription = original(*args, **kw)
            registered.release()
            return subscription

        setattr(bus, "subscribe", subscribe)  # noqa: B010 - shadow the bound method
        reader = EventReader(self.running.target, **kwargs)
        try:
            assert registered.acquire(timeout=TIMEOUT_S), "StreamFills never subscribed"
            yield reader
        finally:
            delattr(bus, "subscribe")
            reader.close()


class EventReader:
    """Runs the blocking client's stream_fills in a thread and hands events over a queue."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        self._client = ExecutionClient(target, timeout=TIMEOUT_S)
        self._iterator = self._client.stream_fills(**kwargs)
        self._events: queue.Queue[ExecutionEvent | BaseException | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._iterator:
                self._events.put(event)
        except ExecgwError as e:
            if not self._closing.is_set():
                self._events.put(e)
        except BaseException as e:  # surfaced to the test thread
            self._events.put(e)
        self._events.put(None)

    def next(self, timeout: float = TIMEOUT_S) -> ExecutionEvent:
        """The next event, skipping heartbeats (they say nothing about risk)."""
        while True:
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no stream event within {timeout}s") from None
            if item is None:
                raise AssertionError("the stream ended")
            if isinstance(item, BaseException):
                raise AssertionError(f"the stream failed: {item!r}") from item
            if item.WhichOneof("payload") != "heartbeat":
                return item

    def until(self, wanted: Callable[[ExecutionEvent], bool]) -> list[ExecutionEvent]:
        """Every event up to and including the first one `wanted` accepts."""
        seen: list[ExecutionEvent] = []
        while True:
            event = self.next()
            seen.append(event)
            if wanted(event):
                return seen

    def risk_events(self, until_kind: int) -> list[ExecutionEvent]:
        """Risk events up to and including the first of kind `until_kind`."""
        seen = self.until(
            lambda e: e.WhichOneof("payload") == "risk_event" and e.risk_event.kind == until_kind
        )
        return [e for e in seen if e.WhichOneof("payload") == "risk_event"]

    def close(self) -> None:
        self._closing.set()
        self._client.close()
        self._thread.join(timeout=TIMEOUT_S)


# -- assertions -----------------------------------------------------------------


def reason_name(value: int) -> str:
    return RejectReason.Name(value)  # type: ignore[arg-type]


def assert_rejected(result: ExecutionResult, reason: int, *fragments: str) -> None:
    """REJECTED for `reason`, with every fragment (limits, values) in the message."""
    assert result.status == REJECTED, result
    assert result.reject_reason == reason, (reason_name(result.reject_reason), result.message)
    for fragment in fragments:
        assert fragment in result.message, (fragment, result.message)
    assert result.order_id, "a rejected order is still recorded"


def assert_accepted(result: ExecutionResult, status: int = FILLED) -> None:
    assert result.reject_reason == RejectReason.REJECT_REASON_UNSPECIFIED, (
        reason_name(result.reject_reason),
        result.message,
    )
    assert result.status == status, result


def breaker(state: RiskState, name: str, strategy: str = "") -> BreakerStatus:
    found = [b for b in state.breakers if b.name == name and b.strategy_code == strategy]
    assert len(found) == 1, (name, strategy, state.breakers)
    return found[0]


def strategy_state(state: RiskState, strategy: str) -> StrategyRiskState:
    found = [s for s in state.strategies if s.strategy_code == strategy]
    assert len(found) == 1, (strategy, state.strategies)
    return found[0]


def tripped(state: RiskState) -> set[tuple[str, str]]:
    return {(b.name, b.strategy_code) for b in state.breakers if b.tripped}
