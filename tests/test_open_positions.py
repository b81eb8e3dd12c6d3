"""The ledger keeps the positions that are not flat apart (the breakers value only those
after every order, quote and tick), and that set is always exactly the non-flat ones:
fill by fill, through flips and round trips, and after a restore."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Context, Decimal
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from execgw.server.domain import (
    Fill,
    OrderIntent,
    OrderType,
    PositionKey,
    Product,
    Quote,
    Side,
    Validity,
)
from execgw.server.engine import ExecutionEngine
from execgw.server.events import OrderAccepted, OrderFilled
from execgw.server.ledger import Ledger

WHEN = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
STRATEGIES = ("s1", "s2")
SYMBOLS = ("NSE:INFY", "NSE:TCS", "NSE:SBIN")
PRODUCTS = (Product.MIS, Product.CNC)

# One fill: which position, how many (sign: side), at what price in paise.
fills = st.lists(
    st.tuples(
        st.sampled_from(STRATEGIES),
        st.sampled_from(SYMBOLS),
        st.sampled_from(PRODUCTS),
        st.integers(-7, 7).filter(bool),
        st.integers(9_000, 11_000),
    ),
    max_size=60,
)


def _fill(ledger: Ledger, number: int, key: PositionKey, signed_qty: int, paise: int) -> None:
    strategy, symbol, product = key
    side = Side.BUY if signed_qty > 0 else Side.SELL
    qty = abs(signed_qty)
    order_id = f"O{number:05d}"
    intent = OrderIntent(symbol, strategy, side, qty, OrderType.MARKET, product, Validity.DAY)
    ledger.apply(OrderAccepted(order_id, f"c{number}", intent, WHEN))
    price = Decimal(paise) / 100
    fill = Fill(
        f"F{number}", order_id, f"c{number}", strategy, symbol, side, product, qty, price, WHEN
    )
    ledger.apply(OrderFilled(fill, Quote(symbol, price, WHEN)))


def _assert_open_set_exact(ledger: Ledger) -> None:
    expected = {key: state for key, state in ledger.position_items() if state.net_qty}
    found = dict(ledger.open_position_items())
    assert found.keys() == expected.keys()
    assert all(found[key] is expected[key] for key in expected)  # the live states
    for symbol in SYMBOLS:
        assert ledger.has_open_position(symbol) == any(s == symbol for _, s, _ in expected)


@settings(max_examples=150, deadline=None)
@given(fills)
def test_open_positions_are_exactly_the_non_flat_ones(
    steps: list[tuple[str, str, Product, int, int]],
) -> None:
    ledger = Ledger()
    numbers = itertools.count(1)
    for strategy, symbol, product, signed_qty, paise in steps:
        _fill(ledger, next(numbers), (strategy, symbol, product), signed_qty, paise)
        _assert_open_set_exact(ledger)
    orders, positions = ledger.export()
    # Copies, as a snapshot's decoding gives: export() hands out the live states.
    restored = Ledger.restore(orders, [(key, replace(state)) for key, state in positions])
    _assert_open_set_exact(restored)
    # And it goes on from there as the original would.
    for strategy, symbol, product, signed_qty, paise in steps[:10]:
        number = next(numbers)
        _fill(ledger, number, (strategy, symbol, product), -signed_qty, paise)
        _fill(restored, number, (strategy, symbol, product), -signed_qty, paise)
        _assert_open_set_exact(ledger)
        _assert_open_set_exact(restored)
    assert dict(ledger.open_position_items()).keys() == dict(restored.open_position_items()).keys()


def test_a_round_trip_leaves_the_set_and_a_reopened_position_comes_back() -> None:
    ledger = Ledger()
    key: PositionKey = ("s1", "NSE:INFY", Product.MIS)
    _fill(ledger, 1, key, 5, 10_000)
    assert [k for k, _ in ledger.open_position_items()] == [key]
    _fill(ledger, 2, key, -5, 10_100)
    assert ledger.open_position_items() == []
    assert not ledger.has_open_position("NSE:INFY")
    assert ledger.position(key) is not None  # the day's flat position is still reported
    _fill(ledger, 3, key, -2, 10_050)  # short from flat
    assert [k for k, _ in ledger.open_position_items()] == [key]
    _fill(ledger, 4, key, 4, 10_000)  # through flat to long: still open
    assert [(k, s.net_qty) for k, s in ledger.open_position_items()] == [(key, 2)]


def _valuer(ledger: Ledger, marks: dict[str, Decimal]) -> ExecutionEngine:
    """The engine's valuation over `ledger`, with `marks` as the journaled marks and no
    live quotes: only the state those methods read."""
    engine = object.__new__(ExecutionEngine)
    engine.state = SimpleNamespace(ledger=ledger, marks=marks)  # type: ignore[assignment]
    engine._quotes = SimpleNamespace(ltp=lambda symbol: None)  # type: ignore[assignment]
    return engine


# Positions with partial closes: their open cost carries a 28-digit remainder, so a sum
# rounded term by term depends on the order of the terms.
books = st.lists(
    st.tuples(
        st.sampled_from([3, 7, 9, 11, 13, 700, 3001]),
        st.integers(1, 4),
        st.integers(100_000, 30_000_000),
        st.integers(100_000, 30_000_000),
        st.integers(100_000, 30_000_000),
        st.integers(100_000, 30_000_000),
    ),
    min_size=3,
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(books)
def test_valuation_is_exact_whatever_order_positions_reopened_in(
    book: list[tuple[int, int, int, int, int, int]],
) -> None:
    ledger = Ledger()
    numbers = itertools.count(1)
    marks: dict[str, Decimal] = {}
    for symbol, (qty, more, first, second, third, mark) in zip(SYMBOLS, book, strict=True):
        key: PositionKey = ("s1", symbol, Product.CNC)
        _fill(ledger, next(numbers), key, qty, first)
        _fill(ledger, next(numbers), key, more, second)
        _fill(ledger, next(numbers), key, -(qty - 1), third)  # a partial close
        marks[symbol] = Decimal(mark) / 100
    # The first position goes flat and reopens: it is now last among the open ones,
    # while the day's positions (and a restore from them) keep it first.
    first_key: PositionKey = ("s1", SYMBOLS[0], Product.CNC)
    held = dict(ledger.open_position_items())[first_key].net_qty
    _fill(ledger, next(numbers), first_key, -held, 10_000)
    _fill(ledger, next(numbers), first_key, 5, 10_001)
    orders, positions = ledger.export()
    restored = Ledger.restore(orders, [(key, replace(state)) for key, state in positions])
    assert [k for k, _ in ledger.open_position_items()] != [
        k for k, _ in restored.open_position_items()
    ]
    live = _valuer(ledger, marks)
    again = _valuer(restored, marks)
    # The exact sum (no term rounded away), rounded once to the usual 28 digits.
    wide = Context(prec=200)
    exact = Decimal(0)
    for key, state in ledger.open_position_items():
        exact = wide.add(exact, state.unrealized(marks[key[1]]))
    assert live._valuation() == again._valuation()
    assert live._valuation()[0] == +exact
    # A baseline taken with no price moved is what the breakers value next: the new
    # day starts at a day PnL of exactly zero.
    assert live._baseline()[0] == live._valuation()[0]
