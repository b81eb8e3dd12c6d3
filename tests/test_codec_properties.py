"""Every event type round-trips through the journal codec and the snapshot, generated
from its declaration: a new event, or a new field on one, is covered with no edit here.

Values are built from each dataclass's type annotations (`strategy_for`), so the test
knows nothing of any particular event.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execgw.server import codec
from execgw.server.domain import Order, QuoteLiquidity
from execgw.server.events import Event
from execgw.server.journal import Journal, JournalRecord
from execgw.server.ledger import Ledger, PositionState
from execgw.server.recovery import (
    GatewayState,
    IdSource,
    PositionEntry,
    RiskEntry,
    state_from_json,
    state_to_json,
)
from execgw.server.risk import RiskBook
from execgw.server.risk_state import NOT_STATE

EVENT_TYPES = list(get_args(Event))
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_SCALARS: dict[Any, st.SearchStrategy[Any]] = {
    str: _TEXT,
    int: st.integers(-(2**62), 2**62),
    bool: st.booleans(),
    float: st.floats(allow_nan=False, allow_infinity=False),
    # Any finite decimal, exponent forms and -0 included: the text must survive exactly.
    Decimal: st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: d.adjusted() < 15),
    datetime: st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    date: st.dates(min_value=date(1971, 1, 1), max_value=date(2200, 1, 1)),
    Any: _JSON,
}


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of type `tp`, for the types the journaled declarations use."""
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    if tp is type(None):
        return st.none()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(tp) if f.init}
        return st.builds(tp, **fields)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is set:
        return st.sets(strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    raise TypeError(f"no strategy for {tp!r}: teach strategy_for this type")


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_type_round_trips_through_the_journal_codec(event_type: type) -> None:
    @SETTINGS
    @given(event=strategy_for(event_type), order=st.none() | strategy_for(Order))
    def round_trip(event: Any, order: Order | None) -> None:
        body = codec.encode_row(event, order)
        decoded_event, decoded_order = codec.decode_row(codec.event_kind(event), body)
        assert decoded_event == event
        assert type(decoded_event) is event_type
        assert decoded_order == order
        # Equal is not enough for money (Decimal("1.10") == Decimal("1.1")): the
        # re-encoded text must be the same text.
        assert codec.encode_row(decoded_event, decoded_order) == body

    round_trip()


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_type_round_trips_through_a_real_journal(
    event_type: type, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:

        @SETTINGS
        @given(events=st.lists(strategy_for(event_type), min_size=1, max_size=3))
        def round_trip(events: list[Any]) -> None:
            start = journal.head_sequence
            now = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
            records = [
                JournalRecord(start + i, now + timedelta(seconds=i), e, None)
                for i, e in enumerate(events, start=1)
            ]
            journal.append(records)
            assert [r.event for r in journal.records_after(start, 10)] == events

        round_trip()
    finally:
        journal.close()


@SETTINGS
@given(
    orders=st.lists(strategy_for(Order), max_size=3),
    positions=st.lists(strategy_for(PositionEntry), max_size=3),
    risk=strategy_for(RiskEntry),
    ids=strategy_for(IdSource),
    marks=strategy_for(dict[str, Decimal]),
    sequence=st.integers(0, 2**40),
    liquidity=st.lists(strategy_for(QuoteLiquidity), max_size=3),
)
def test_the_state_round_trips_through_the_snapshot(
    orders: list[Order],
    positions: list[PositionEntry],
    risk: RiskEntry,
    ids: IdSource,
    marks: dict[str, Decimal],
    sequence: int,
    liquidity: list[QuoteLiquidity],
) -> None:
    unique = {o.order_id: o for o in orders}
    state = GatewayState(
        ledger=Ledger.restore(list(unique.values()), [p.restore() for p in positions]),
        risk=risk.restore(),
        ids=ids,
        sequence=sequence,
        head_hash="0" * 64,
        marks=marks,
        fill_marks=set(list(marks)[:1]),
        liquidity={entry.quote.symbol: entry for entry in liquidity},
    )
    body = state_to_json(state)
    again = state_from_json(body)
    assert state_to_json(again) == body
    assert again.ledger.export() == state.ledger.export()
    assert again.risk == state.risk
    assert (again.ids, again.marks, again.fill_marks) == (state.ids, state.marks, state.fill_marks)
    assert again.liquidity == state.liquidity


@pytest.mark.parametrize(
    ("snapshot_form", "declaration"),
    [(PositionEntry, PositionState), (RiskEntry, RiskBook)],
)
def test_each_snapshot_form_mirrors_every_field_of_what_it_stands_for(
    snapshot_form: type, declaration: type
) -> None:
    """A field added to the ledger's or risk state's declaration cannot be left out of
    the snapshot unnoticed (unless it says it is bookkeeping, not state)."""
    mirrored = {f.name for f in dataclasses.fields(snapshot_form)}
    declared = {f.name for f in dataclasses.fields(declaration) if not f.metadata.get(NOT_STATE)}
    assert declared <= mirrored, f"missing from {snapshot_form.__name__}: {declared - mirrored}"
