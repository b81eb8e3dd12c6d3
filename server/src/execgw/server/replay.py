"""`execgw replay`: re-run a recorded day through another config, in memory.

The journal is read, never written. Its inputs are taken in journal order and fed to
a fresh engine (no gRPC, no journal) built from the other config, at the clock times
they were recorded at:

- quotes: QuotesRecorded (journal.record_quotes: true), applied as the batch they were;
- orders: every OrderAccepted / OrderSubmitted / OrderRejected a strategy placed (not
  the gateway's own MIS square-off: the replay engine places its own), submitted with
  the same intent and client_order_id. The children of an autosliced order go in as
  the parent they came from (its key, its whole quantity), once: the live gateway
  checked the parent once, and the replayed config may slice it otherwise or reject
  it;
- a client's cancel (CancelRequested, or OrderCancelled "cancelled by client"), sent
  to the replayed order with the same key. A cancel of an autosliced child goes to the
  replayed child with its key when the replay sliced the parent into the same children;
  otherwise the parent's replayed orders (it unsliced, or its other children) are all
  cancelled once the recorded cancels leave no recorded child open, at that cancel's
  time: the trader cancelled the order then. Cancels of only some children, the rest
  filling, cancel nothing there (a parent cannot be cut down in part);
- an operator's halt and resume;
- the times of rollovers, square-offs and the gateway's own orders, as ticks;
- the times of fills, arrivals and cancels, as time passing: with latency, the
  simulator delivers what is due then even when no quote comes.

Then both runs are summed up the same way, per order (filled qty, average price; an
autosliced order as its parent, its children beside it) and per strategy (realized PnL
gross and net of charges), and compared. Nothing here is random beyond the simulator's
seed: the same journal and config give the same result, and the recording's own config
gives the recorded fills.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from execgw.server import autoslice
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.domain import Order, OrderIntent
from execgw.server.engine import ExecutionEngine
from execgw.server.errors import GatewayError
from execgw.server.events import (
    BreakerTripped,
    CancelRequested,
    DayRolledOver,
    EquityPeak,
    FillExecuted,
    MisSquareOffStarted,
    OrderAccepted,
    OrderArrived,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    QuotesRecorded,
    TradingHalted,
    TradingResumed,
    VenueRejected,
)
from execgw.server.instruments import InstrumentRegistry, load_kite_instruments
from execgw.server.journal import GENESIS_HASH, Journal, JournalRecord
from execgw.server.ledger import Ledger
from execgw.server.quotes import quote_book
from execgw.server.recovery import GatewayState, IdSource, rebuild
from execgw.server.risk import RiskEngine
from execgw.server.risk_state import RiskBook
from execgw.server.trading_calendar import TradingCalendar
from execgw.server.venues.factory import build_venue

CLIENT_CANCEL = "cancelled by client"
ZERO = Decimal(0)


class ReplayError(Exception):
    """The journal cannot be replayed (pruned, no recorded quotes) or the config is not
    a paper one."""


@dataclass(frozen=True, slots=True)
class OrderResult:
    strategy_code: str
    client_order_id: str
    symbol: str
    side: str
    qty: int
    status: str
    filled_qty: int
    avg_price: Decimal | None
    charges: Decimal
    # An autosliced order's children (this row is their sum, under the parent's key);
    # empty for an order that was not sliced.
    children: tuple[OrderResult, ...] = ()


@dataclass(frozen=True, slots=True)
class StrategyResult:
    strategy_code: str
    filled_qty: int
    realized_gross: Decimal
    charges: Decimal

    @property
    def realized_net(self) -> Decimal:
        return self.realized_gross - self.charges


@dataclass(frozen=True, slots=True)
class RunResult:
    orders: dict[tuple[str, str], OrderResult]
    strategies: dict[str, StrategyResult]


@dataclass(frozen=True, slots=True)
class Comparison:
    recorded: RunResult
    replayed: RunResult

    def order_keys(self) -> list[tuple[str, str]]:
        return sorted(set(self.recorded.orders) | set(self.replayed.orders))

    def strategy_codes(self) -> list[str]:
        return sorted(set(self.recorded.strategies) | set(self.replayed.strategies))

    def differs(self, key: tuple[str, str]) -> bool:
        a, b = self.recorded.orders.get(key), self.replayed.orders.get(key)
        if a is None or b is None:
            return True
        return (a.filled_qty, a.avg_price, a.status, len(a.children)) != (
            b.filled_qty,
            b.avg_price,
            b.status,
            len(b.children),
        )


def summarize(state: GatewayState) -> RunResult:
    """Per order (by strategy and client_order_id) and per strategy, as `state` stands.
    The gateway's own orders are keyed "auto-<order id>" as journaled. An autosliced
    order is one row under its parent's key: a config that slices it otherwise, or
    rejects it whole, is then compared with it order for order."""
    placed = list(state.ledger.orders())
    runs = autoslice.sliced_runs(
        [autoslice.Placed(o.client_order_id, o.intent, o.created_at) for o in placed]
    )
    in_run = {i for _, run in runs for i in run}
    orders: dict[tuple[str, str], OrderResult] = {}
    for i, order in enumerate(placed):
        if i not in in_run:
            orders[(order.intent.strategy_code, order.client_order_id)] = _order_result(order)
    for parent, run in runs:
        children = [placed[i] for i in run]
        whole = _order_result(autoslice.aggregate(parent, children))
        whole = replace(whole, children=tuple(_order_result(c) for c in children))
        orders[(whole.strategy_code, parent)] = whole
    strategies: dict[str, StrategyResult] = {}
    for view in state.ledger.positions(lambda symbol: None):
        before = strategies.get(view.strategy_code)
        strategies[view.strategy_code] = StrategyResult(
            view.strategy_code,
            view.buy_qty + view.sell_qty + (0 if before is None else before.filled_qty),
            view.realized_pnl + (ZERO if before is None else before.realized_gross),
            view.charges + (ZERO if before is None else before.charges),
        )
    return RunResult(orders, strategies)


def _order_result(order: Order) -> OrderResult:
    intent = order.intent
    return OrderResult(
        intent.strategy_code,
        order.client_order_id,
        intent.symbol,
        intent.side.value,
        intent.qty,
        order.status.value,
        order.filled_qty,
        order.avg_price,
        order.charges,
    )


def records(journal: Journal) -> Iterator[JournalRecord]:
    if journal.oldest_sequence() > 1:
        raise ReplayError(
            "the journal was pruned (journal.retain_events): a replay needs it from the start"
        )
    for row in journal.rows():
        yield row.decode()


def recorded(journal: Journal) -> RunResult:
    return summarize(rebuild(journal, starting=True))


def replay(recorded_records: Iterable[JournalRecord], config: GatewayConfig) -> RunResult:
    """The recorded inputs run through `config`'s simulator and risk, in memory."""
    if config.mode != "paper":
        raise ReplayError("replay runs the paper simulator: give a config with mode: paper")
    items = list(recorded_records)
    if not any(isinstance(r.event, QuotesRecorded) for r in items):
        raise ReplayError(
            "the journal has no recorded quotes: record them with journal.record_quotes: true"
        )
    clock = ManualClock(items[0].timestamp if items else datetime.now().astimezone())
    engine = build_engine(config, clock)
    parents = _sliced_parents(items)
    runs = {oid: p.run for p in parents.values() for oid in p.run.order_ids}
    # The recorded order id of each order a strategy placed, to its key.
    keys: dict[str, tuple[str, str]] = {}
    cancelled: set[str] = set()
    for index, record in enumerate(items):
        event = record.event
        clock.set(max(clock.now(), record.timestamp))
        engine.begin_command()
        _note_closed(event, runs)
        # A refused command (a cancel of an order the other config had filled already)
        # is an error to the caller, as the gateway answers it. What it did before it
        # was refused (e.g. reports its time delivered) stands, the ids it drew
        # included, as in the gateway's writer: nothing is undone.
        with contextlib.suppress(GatewayError):
            _feed(engine, event, keys, cancelled, parents.get(index), runs)
        engine.take_pending()
    return summarize(engine.state)


@dataclass(slots=True)
class _Run:
    """One recorded autosliced parent: its key, its children's recorded order ids and
    quantities, and which of them the recording has closed (filled, cancelled,
    rejected) so far."""

    strategy_code: str
    client_order_id: str
    order_ids: tuple[str, ...]
    qtys: tuple[int, ...]
    unfilled: dict[str, int]
    closed: set[str]
    # Set once the parent's replayed orders were cancelled: later child cancels of the
    # same recorded cancel-all are no new decision.
    cancelled: bool = False

    def child_keys(self) -> list[str]:
        return [
            autoslice.child_client_order_id(self.client_order_id, i)
            for i in range(1, 1 + len(self.qtys))
        ]


@dataclass(frozen=True, slots=True)
class _Parent:
    """What to submit in place of an autosliced child's record: the parent (`intent`,
    `client_order_id`) at the first child, nothing at the others."""

    intent: OrderIntent | None
    client_order_id: str
    run: _Run


def _sliced_parents(items: list[JournalRecord]) -> dict[int, _Parent]:
    """By record index, every strategy order record that was an autoslice child."""
    placed: list[tuple[int, OrderAccepted | OrderSubmitted | OrderRejected]] = [
        (i, r.event)
        for i, r in enumerate(items)
        if isinstance(r.event, OrderAccepted | OrderSubmitted | OrderRejected)
        and not r.event.internal
    ]
    runs = autoslice.sliced_runs(
        [autoslice.Placed(e.client_order_id, e.intent, e.timestamp) for _, e in placed]
    )
    parents: dict[int, _Parent] = {}
    for parent, indices in runs:
        children = [placed[i][1] for i in indices]
        first = children[0].intent
        whole = replace(first, qty=sum(c.intent.qty for c in children))
        run = _Run(
            first.strategy_code,
            parent,
            tuple(c.order_id for c in children),
            tuple(c.intent.qty for c in children),
            {c.order_id: c.intent.qty for c in children},
            set(),
        )
        for i in indices:
            parents[placed[i][0]] = _Parent(whole if i == indices[0] else None, parent, run)
    return parents


def _note_closed(event: object, runs: dict[str, _Run]) -> None:
    """Keep each recorded child's closing, as the recording saw it: a cancel of the
    parent's remaining children is told from a cancel of some of them by it."""
    match event:
        case OrderFilled(fill=fill) if fill.order_id in runs:
            run = runs[fill.order_id]
            run.unfilled[fill.order_id] -= fill.qty
            if run.unfilled[fill.order_id] <= 0:
                run.closed.add(fill.order_id)
        case OrderCancelled(order_id=order_id) | VenueRejected(order_id=order_id) if (
            order_id in runs
        ):
            runs[order_id].closed.add(order_id)
        case OrderRejected(order_id=order_id) if order_id in runs:
            runs[order_id].closed.add(order_id)
        case _:
            pass


def _cancel_child(engine: ExecutionEngine, run: _Run, order_id: str, cancelled: set[str]) -> None:
    """A client's cancel of recorded child `order_id`: see the module docstring."""
    ledger = engine.state.ledger
    code = run.strategy_code
    keys = run.child_keys()
    replayed = [ledger.order_for_client_id(code, key) for key in keys]
    beyond = autoslice.child_client_order_id(run.client_order_id, len(keys) + 1)
    alike = (
        all(
            o is not None and o.intent.qty == qty for o, qty in zip(replayed, run.qtys, strict=True)
        )
        and ledger.order_for_client_id(code, beyond) is None
    )
    if alike:
        order = replayed[run.order_ids.index(order_id)]
        if order is not None and order.status.is_open:
            engine.cancel(order.order_id)
        return
    if run.cancelled or not all(i in cancelled or i in run.closed for i in run.order_ids):
        return
    run.cancelled = True
    for order in _replayed_orders(engine, run):
        if order.status.is_open:
            # One refused (filled meanwhile) leaves the others to cancel.
            with contextlib.suppress(GatewayError):
                engine.cancel(order.order_id)


def _replayed_orders(engine: ExecutionEngine, run: _Run) -> list[Order]:
    """The replay's orders of `run`'s parent: the parent unsliced (or rejected whole),
    or its children however many the replayed config made."""
    ledger = engine.state.ledger
    found = [ledger.order_for_client_id(run.strategy_code, run.client_order_id)]
    index = 1
    while True:
        key = autoslice.child_client_order_id(run.client_order_id, index)
        child = ledger.order_for_client_id(run.strategy_code, key)
        if child is None:
            break
        found.append(child)
        index += 1
    return [o for o in found if o is not None]


def build_engine(config: GatewayConfig, clock: ManualClock) -> ExecutionEngine:
    """A fresh engine with `config`'s instruments, quote book, venue and risk: in
    memory, no journal (take_pending drops its records)."""
    section = config.instruments
    instruments = InstrumentRegistry(
        load_kite_instruments(Path(section.csv)) if section.csv else [],
        default_tick=Decimal(repr(section.default_tick_size)),
        default_lot=section.default_lot_size,
        freeze_qty=section.freeze_qty,
    )
    return ExecutionEngine(
        state=GatewayState(
            ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
        ),
        clock=clock,
        quotes=quote_book(config.market_data, instruments, clock),
        venue=build_venue(config, instruments),
        risk=RiskEngine(config.execution, TradingCalendar(config.trading_day)),
    )


def _feed(
    engine: ExecutionEngine,
    event: object,
    keys: dict[str, tuple[str, str]],
    cancelled: set[str],
    parent: _Parent | None,
    runs: dict[str, _Run],
) -> None:
    match event:
        case QuotesRecorded(quotes=quotes):
            engine.apply_quotes(list(quotes))
        case OrderAccepted() | OrderSubmitted() | OrderRejected() if not event.internal:
            keys[event.order_id] = (event.intent.strategy_code, event.client_order_id)
            if parent is None:
                engine.submit(event.intent, event.client_order_id)
            elif parent.intent is not None:
                engine.submit(parent.intent, parent.client_order_id)
        case CancelRequested() | OrderCancelled() if (
            event.message == CLIENT_CANCEL and event.order_id not in cancelled
        ):
            cancelled.add(event.order_id)
            run = runs.get(event.order_id)
            if run is not None:
                _cancel_child(engine, run, event.order_id, cancelled)
                return
            key = keys.get(event.order_id)
            order = None if key is None else engine.state.ledger.order_for_client_id(*key)
            if order is not None and order.status.is_open:
                engine.cancel(order.order_id)
        case TradingHalted(strategy_code=code, actor=actor, reason=reason):
            engine.halt(code, actor, reason)
        case TradingResumed(strategy_code=code, actor=actor, reason=reason):
            engine.resume(code, actor, reason)
        case OrderAccepted() | OrderSubmitted() | OrderRejected() | DayRolledOver():
            engine.tick()
        case MisSquareOffStarted():
            engine.tick()
        case BreakerTripped() | EquityPeak():
            # Only ever journaled by the breaker evaluation that ends a command: when a
            # tick's deliveries (time alone) tripped it, nothing else here evaluates.
            engine.tick()
        case OrderFilled() | FillExecuted() | OrderArrived() | OrderCancelled() | VenueRejected():
            # Perhaps what the simulator's latency held until then, delivered as time
            # passed with no quote (a tick): time passes here too, at the same moment.
            engine.advance_time()
        case _:
            pass


def compare(journal: Journal, config: GatewayConfig) -> Comparison:
    return Comparison(recorded(journal), replay(records(journal), config))
