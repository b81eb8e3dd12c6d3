"""The gateway's metrics, with the OpenTelemetry metrics SDK.

Order, fill and breaker metrics are derived from the events the core publishes on the
bus (EventBus.observe), after they are durable: the same facts subscribers see, counted
once, without reaching into the engine. RPC latencies come from the server
interceptor, journal commits from the core's commit observer, and queue depth and
stream lag are read when metrics are collected.

Every attribute is an enum value, a breaker name or a strategy code that tripped a
breaker, so series stay few. The session is never a dimension (a caller can name a new
one per call): it is on the resource (the configured session) and on the exemplars of
the RPC latency histograms (the call's session), next to the trace and span ids.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from execgw.server.breakers import Breaker
from execgw.server.bus import BusEvent, EventBus
from execgw.server.domain import TradingState
from execgw.server.events import (
    ORDER_EVENTS,
    BreakerTripped,
    DayRolledOver,
    OrderFilled,
    TradingHalted,
    TradingResumed,
)
from execgw.server.risk import RiskReport
from execgw.server.telemetry import attributes as attr
from execgw.server.telemetry.histograms import BucketHistogram, Histograms

log = logging.getLogger(__name__)

METER_NAME = "execgw.server"
ACCOUNT_SCOPE = "account"

# Seconds: an order round trip on loopback is well under a millisecond to a few.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

RPC_DURATION = "execgw.rpc.server.duration"
ORDERS = "execgw.orders"
FILLS = "execgw.fills"
FILLED_QTY = "execgw.fills.qty"
JOURNAL_COMMIT_DURATION = "execgw.journal.commit.duration"
JOURNAL_COMMIT_RECORDS = "execgw.journal.commit.records"
JOURNAL_COMMIT_COMMANDS = "execgw.journal.commit.commands"
QUEUE_DEPTH = "execgw.core.queue_depth"
SUBSCRIBERS = "execgw.stream.subscribers"
LAG_MAX = "execgw.stream.lag.max"
LAG_TOTAL = "execgw.stream.lag.total"
OVERFLOWS = "execgw.stream.overflows"
BREAKER_TRIPPED = "execgw.breaker.tripped"
TRADING_STATE = "execgw.trading.state"

# The dimensions of the RPC latency histogram (SubmitOrder's also by the order's status
# and reject reason); anything else a measurement carries (the session) goes to its
# exemplars only.
_RPC_KEYS = {
    attr.RPC_SERVICE,
    attr.RPC_METHOD,
    attr.RPC_GRPC_STATUS_CODE,
    attr.STATUS,
    attr.REJECT_REASON,
}


def meter_provider(readers: Sequence[MetricReader], resource: Resource) -> MeterProvider:
    return MeterProvider(
        metric_readers=list(readers),
        resource=resource,
        # The gateway shuts it down as it stops; no exit hook holding it forever.
        shutdown_on_exit=False,
    )


class GatewayMetrics:
    """The instruments, and what feeds them. With no meter (no reader configured) every
    instrument is a no-op and nothing is hooked up."""

    def __init__(self, meter: Meter | None = None, histograms: Histograms | None = None) -> None:
        """`histograms`: where the histograms go (each reader of the meter collects them
        too); with no meter, nothing is recorded."""
        self.enabled = meter is not None
        meter = meter or NoOpMeterProvider().get_meter(METER_NAME)
        # Latencies and batch sizes: explicit-bucket histograms of our own, recorded
        # into for a fraction of the SDK instrument's cost (telemetry/histograms.py),
        # with its exemplars from sampled spans.
        histograms = histograms or Histograms(InstrumentationScope(METER_NAME), Resource({}))
        self.rpc_duration = histograms.add(
            BucketHistogram(
                RPC_DURATION,
                unit="s",
                description="RPCs served, by service, method and gRPC status code; SubmitOrder "
                "also by the order's status and reject reason",
                boundaries=LATENCY_BUCKETS,
                dimensions=sorted(_RPC_KEYS),
            )
        )
        # Counted here as events are published, handed to the SDK only when metrics are
        # collected: the order path pays a dict increment per event, not an SDK call.
        self._orders: dict[_Key, int] = defaultdict(int)
        self._fills: dict[_Key, int] = defaultdict(int)
        self._filled_qty: dict[_Key, int] = defaultdict(int)
        for name, unit, description, counts in (
            (
                ORDERS,
                "{event}",
                "Order events, by event, the status the order moved to, reject reason, "
                "dry_run and internal (the gateway's own square-off orders)",
                self._orders,
            ),
            (FILLS, "{fill}", "Fills, by side", self._fills),
            (FILLED_QTY, "{share}", "Quantity filled, by side", self._filled_qty),
        ):
            meter.create_observable_counter(
                name, [_reader(counts)], unit=unit, description=description
            )
        self._commit_duration = histograms.add(
            BucketHistogram(
                JOURNAL_COMMIT_DURATION,
                unit="s",
                description="Durable journal commits (one per batch of commands)",
                boundaries=LATENCY_BUCKETS,
            )
        )
        self._commit_records = histograms.add(
            BucketHistogram(
                JOURNAL_COMMIT_RECORDS,
                unit="{record}",
                description="Events per journal commit",
                boundaries=BATCH_BUCKETS,
            )
        )
        self._commit_commands = histograms.add(
            BucketHistogram(
                JOURNAL_COMMIT_COMMANDS,
                unit="{command}",
                description="Commands per journal commit (the group-commit batch size)",
                boundaries=BATCH_BUCKETS,
            )
        )
        self._meter = meter
        # (breaker, scope) -> state it put the scope in; mirrors RiskBook.trips.
        self._trips: dict[tuple[str, str], TradingState] = {}
        # Every (breaker, scope) ever seen tripped: reported as 0 once released.
        self._breakers_seen: set[tuple[str, str]] = set()
        self._scopes_seen: set[str] = {ACCOUNT_SCOPE}

    # -- hooks ------------------------------------------------------------------------

    def watch(self, bus: EventBus, queue_depth: Callable[[], int]) -> None:
        """Observe the bus, and report its subscribers and the core's queue when read."""
        if not self.enabled:
            return
        bus.observe(self.on_events)

        def gauge(name: str, unit: str, description: str, read: Callable[[], int]) -> None:
            def observe(options: CallbackOptions) -> Iterable[Observation]:
                return [Observation(read())]

            self._meter.create_observable_gauge(name, [observe], unit=unit, description=description)

        gauge(QUEUE_DEPTH, "{command}", "Commands waiting for the core's writer", queue_depth)
        gauge(SUBSCRIBERS, "{subscriber}", "StreamFills subscribers", lambda: bus.subscriber_count)
        gauge(
            LAG_MAX,
            "{event}",
            "Events the furthest-behind StreamFills subscriber has yet to receive",
            lambda: max(bus.backlogs, default=0),
        )
        gauge(
            LAG_TOTAL,
            "{event}",
            "Events queued for all StreamFills subscribers",
            lambda: sum(bus.backlogs),
        )

        def overflows(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(bus.overflowed)]

        self._meter.create_observable_counter(
            OVERFLOWS,
            [overflows],
            unit="{subscriber}",
            description="StreamFills subscribers cut off for falling behind",
        )
        self._meter.create_observable_gauge(
            BREAKER_TRIPPED,
            [self._observe_breakers],
            description="1 while the breaker is tripped in its scope (account or strategy)",
        )
        self._meter.create_observable_gauge(
            TRADING_STATE,
            [self._observe_states],
            description="Trading state of each scope: 0 ACTIVE, 1 REDUCING, 2 HALTED",
        )

    def on_commit(self, seconds: float, records: int, commands: int) -> None:
        """The core's commit observer; it runs on the writer, so it never raises."""
        try:
            self._commit_duration.record(seconds)
            self._commit_records.record(records)
            self._commit_commands.record(commands)
        except Exception:
            log.exception("recording a journal commit's metrics failed")

    def seed(self, report: RiskReport) -> None:
        """The breakers as the gateway started: every one the risk report lists, and
        those already tripped (from the journal)."""
        for breaker in report.breakers:
            key = (breaker.breaker.value, breaker.strategy_code or ACCOUNT_SCOPE)
            self._breakers_seen.add(key)
            self._scopes_seen.add(key[1])
            if breaker.trip is not None:
                self._trips.setdefault(key, breaker.trip.state)

    def on_events(self, events: list[BusEvent]) -> None:
        for published in events:
            event = published.event
            if isinstance(event, ORDER_EVENTS):
                self._order_event(published)
            elif isinstance(event, BreakerTripped):
                self._trip(event.breaker.value, event.strategy_code, event.state)
            elif isinstance(event, TradingHalted):
                self._trip(Breaker.KILL_SWITCH.value, event.strategy_code, TradingState.HALTED)
            elif isinstance(event, TradingResumed):
                scope = event.strategy_code or ACCOUNT_SCOPE
                for key in [k for k in self._trips if k[1] == scope]:
                    del self._trips[key]
            elif isinstance(event, DayRolledOver):
                # Breakers clear with the day; an operator's kill switch does not.
                self._trips = {
                    k: s for k, s in self._trips.items() if k[0] == Breaker.KILL_SWITCH.value
                }

    # -- internals ----------------------------------------------------------------------

    def _order_event(self, published: BusEvent) -> None:
        event, order = published.event, published.order
        key: _Key = ((attr.EVENT, _event_kind(event)),)
        if order is not None:
            key += ((attr.STATUS, order.status.value),)
            if order.reject_reason is not None:
                key += ((attr.REJECT_REASON, order.reject_reason.value),)
            key += ((attr.DRY_RUN, order.dry_run), (attr.INTERNAL, order.internal))
        self._orders[key] += 1
        if isinstance(event, OrderFilled):
            side: _Key = ((attr.SIDE, event.fill.side.value),)
            self._fills[side] += 1
            self._filled_qty[side] += event.fill.qty

    def _trip(self, breaker: str, strategy_code: str, state: TradingState) -> None:
        key = (breaker, strategy_code or ACCOUNT_SCOPE)
        self._trips[key] = state
        self._breakers_seen.add(key)
        self._scopes_seen.add(key[1])

    # The callbacks run on the collecting thread (the OTLP reader's own, or the loop for
    # a Prometheus scrape) while the loop may update the state: they read copies.

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        trips = dict(self._trips)
        return [
            Observation(1 if key in trips else 0, {attr.BREAKER: key[0], attr.SCOPE: key[1]})
            for key in sorted(self._breakers_seen)
        ]

    def _observe_states(self, options: CallbackOptions) -> Iterable[Observation]:
        trips = dict(self._trips)
        observations = []
        account = _state_of(trips, ACCOUNT_SCOPE)
        for scope in sorted(self._scopes_seen):
            state = _state_of(trips, scope)
            if scope != ACCOUNT_SCOPE and account.severity > state.severity:
                state = account  # account trips bind every strategy
            observations.append(Observation(state.severity, {attr.SCOPE: scope}))
        return observations


def _state_of(trips: dict[tuple[str, str], TradingState], scope: str) -> TradingState:
    worst = TradingState.ACTIVE
    for (_, trip_scope), state in trips.items():
        if trip_scope == scope and state.severity > worst.severity:
            worst = state
    return worst


# A counter's attributes, as a hashable key.
_Key = tuple[tuple[str, Any], ...]


def _reader(counts: dict[_Key, int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(key)) for key, value in list(counts.items())]

    return observe


_KINDS: dict[type, str] = {}


def _event_kind(event: object) -> str:
    """OrderAccepted -> accepted: any order event, including ones added later."""
    kind = _KINDS.get(type(event))
    if kind is None:
        name = type(event).__name__
        kind = _KINDS[type(event)] = name.removeprefix("Order").lower() or name.lower()
    return kind
