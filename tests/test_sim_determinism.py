"""Determinism: the same quotes and orders with the same seed give byte-identical
events, with every model on (touch, caps, impact, queue draws, latency jitter, charges),
also with fill-report latency and cancels racing the reports."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

from execgw.server import codec
from execgw.server.config import ChargesConfig
from execgw.server.domain import (
    FillInFlight,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Product,
    Quote,
    Side,
    Validity,
)
from execgw.server.events import (
    CancelRequested,
    Event,
    FillExecuted,
    OrderCancelled,
    OrderFilled,
    VenueRejected,
)
from execgw.server.instruments import Instrument, InstrumentRegistry
from execgw.server.venues.factory import charge_model
from execgw.server.venues.fill_model import FillModel
from execgw.server.venues.latency import LatencyModel
from execgw.server.venues.paper import PaperVenue
from execgw.server.venues.simulator import SmartFillSimulator

D = Decimal
SYM = "NSE:INFY"
T0 = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


def session(seed: int, fill_ms: int = 0) -> list[str]:
    """A scripted session of 600 quotes and 200 orders; every event, encoded. With
    fill_ms, fills are reported that much (+ jitter) later and every 5th quote the
    oldest working order is cancelled, reports of its fills perhaps still on the way."""
    sim = SmartFillSimulator(
        slippage_bps=D(0),
        instruments=InstrumentRegistry([Instrument(SYM, D("0.05"), 1)], freeze_qty={SYM: 380}),
        model=FillModel(
            price_source="touch",
            cap_to_displayed_qty=True,
            volume_limit=D("0.2"),
            slippage_model="volume_share",
            touch_fill_probability=D("0.5"),
            seed=seed,
        ),
        charges=charge_model(ChargesConfig(enabled=True)),
        latency=LatencyModel(
            insert_ms=D(5), cancel_ms=D(5), jitter_ms=D(400), seed=seed, fill_ms=D(fill_ms)
        ),
        kite_statuses=True,
    )
    venue = PaperVenue(sim)
    script = random.Random(99)  # the market and the orders; only `seed` varies the sim
    ids, numbers = count(1), count(1)
    orders: dict[str, Order] = {}
    encoded: list[str] = []

    def fold(events: list[Event]) -> None:
        for event in events:
            encoded.append(codec.encode(event))
            if isinstance(event, FillExecuted):
                o = orders[event.fill.order_id]
                assert o.status.is_open
                flight = FillInFlight(event.fill, event.quote, event.reported_at, event.raw)
                o.fills_in_flight = (*o.fills_in_flight, flight)
                assert o.remaining_qty - o.in_flight_qty >= 0
            elif isinstance(event, OrderFilled):
                o = orders[event.fill.order_id]
                # What the ledger would refuse: a fill of a closed order, or an overfill.
                assert o.status.is_open
                # An order's reports come in the order its fills were made.
                if o.fills_in_flight:
                    assert o.fills_in_flight[0].fill.fill_id == event.fill.fill_id
                o.fills_in_flight = tuple(
                    f for f in o.fills_in_flight if f.fill.fill_id != event.fill.fill_id
                )
                o.filled_qty += event.fill.qty
                assert o.remaining_qty >= 0
                if o.remaining_qty == 0:
                    o.status = OrderStatus.FILLED
                elif o.status is not OrderStatus.PENDING_CANCEL:
                    o.status = OrderStatus.PARTIAL
            elif isinstance(event, CancelRequested):
                assert orders[event.order_id].status.is_open
                orders[event.order_id].status = OrderStatus.PENDING_CANCEL
            elif isinstance(event, OrderCancelled | VenueRejected):
                assert orders[event.order_id].status.is_open
                # Never a cancel ahead of a report of the order's fills.
                assert not orders[event.order_id].fills_in_flight
                orders[event.order_id].status = OrderStatus.CANCELLED

    mid, volume = D(1500), 0
    for i in range(600):
        now = T0 + timedelta(milliseconds=250 * i)
        mid += D(script.choice([-2, -1, 0, 1, 2])) * D("0.05")
        half = D(script.choice([1, 2])) * D("0.05")
        volume += script.randint(0, 2_000)
        ltp = mid + D(script.choice([-1, 0, 1])) * D("0.05")
        quote = Quote(
            SYM,
            ltp,
            now,
            mid - half,
            mid + half,
            script.randint(0, 300),
            script.randint(0, 300),
            volume,
        )
        fold(sim.on_quote(quote, now, lambda: f"F{next(ids)}"))
        if fill_ms and i % 5 == 4:
            working = [
                o for o in orders.values() if o.status in (OrderStatus.PLACED, OrderStatus.PARTIAL)
            ]
            if working:
                fold(venue.cancel(working[0], now, "cancelled by client"))
        if i % 3 == 0:
            n = next(numbers)
            side = script.choice([Side.BUY, Side.SELL])
            limit = script.choice([None, mid - half, mid + half])
            intent = OrderIntent(
                SYM,
                "S",
                side,
                script.randint(1, 400),
                OrderType.MARKET if limit is None else OrderType.LIMIT,
                script.choice([Product.MIS, Product.CNC]),
                script.choice([Validity.DAY, Validity.IOC]),
                price=limit,
            )
            order = Order(f"O{n:04d}", f"c{n}", intent, OrderStatus.PLACED, now, now)
            orders[order.order_id] = order
            fold(sim.on_new_order(order, quote, now, lambda: f"F{next(ids)}"))
    return encoded


def test_the_same_session_and_seed_give_byte_identical_events() -> None:
    first = session(seed=3)
    fills = [e for e in first if '"fill"' in e]
    assert len(fills) > 100  # a real session: partial fills, queue draws, charges
    assert session(seed=3) == first
    assert session(seed=4) != first


def test_fill_latency_and_cancels_racing_reports_are_deterministic() -> None:
    first = session(seed=3, fill_ms=300)
    reported = [e for e in first if e.startswith('{"fill"') and '"reported_at"' not in e]
    made = [e for e in first if '"reported_at"' in e]
    assert len(made) > 100
    # Every report is of a fill made before; reports still on the way at the end are
    # all that is missing.
    assert 0 < len(made) - len(reported) < 10
    assert session(seed=3, fill_ms=300) == first
    assert session(seed=4, fill_ms=300) != first
    # Reports come later than the fills were made, so the events differ from no latency.
    assert session(seed=3) != first
