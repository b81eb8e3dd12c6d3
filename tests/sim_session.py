"""The simulator tests' engine session: the real engine run one command at a time, as
the gateway's single writer runs it, each command's records taken (journaled) after it,
with a ManualClock as the only time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig, parse_config
from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderType,
    Product,
    Quote,
    Side,
    Validity,
)
from execgw.server.engine import ExecutionEngine
from execgw.server.events import Event
from execgw.server.instruments import InstrumentRegistry
from execgw.server.journal import GENESIS_HASH, JournalRecord
from execgw.server.ledger import Ledger
from execgw.server.quotes import quote_book
from execgw.server.recovery import GatewayState, IdSource
from execgw.server.replay import build_engine
from execgw.server.risk import RiskEngine
from execgw.server.risk_state import RiskBook
from execgw.server.trading_calendar import TradingCalendar
from execgw.server.venues.factory import build_venue

INFY = "NSE:INFY"
# 10:00 IST on a Friday.
T0 = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


def ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def config(execution: dict[str, Any], **over: Any) -> GatewayConfig:
    base: dict[str, Any] = {
        "pre_trade": {"orders_per_second": 1_000_000.0, "order_burst": 1_000_000},
        "circuit_breakers": {
            "max_trades_per_day": 1_000_000,
            "max_trades_per_strategy_per_day": 1_000_000,
        },
    }
    data = {
        "listen": "127.0.0.1:0",
        "mode": "paper",
        "journal": {"path": "unused.db"},
        "market_data": {"source": "external"},
        "execution": {**base, **execution},
        **over,
    }
    return parse_config(data, source="test")


class Session:
    """An engine run as the gateway's writer runs it: one command at a time, each
    command's records taken (journaled) after it."""

    def __init__(self, cfg: GatewayConfig, start: datetime = T0) -> None:
        self.cfg = cfg
        self.clock = ManualClock(start)
        self.engine = build_engine(cfg, self.clock)
        self.records: list[JournalRecord] = []

    def run(self, command: Any, *args: Any) -> list[Event]:
        self.engine.begin_command()
        command(*args)
        taken = self.engine.take_pending()
        self.records += taken
        return [r.event for r in taken]

    def quote(self, ltp: str, *, qty: int = 0) -> list[Event]:
        price = Decimal(ltp)
        q = Quote(INFY, price, self.clock.now(), price, price, qty, qty, 0)
        return self.run(self.engine.apply_quotes, [q])

    def submit(self, intent: OrderIntent, key: str) -> str:
        self.engine.begin_command()
        order = self.engine.submit(intent, key)
        self.records += self.engine.take_pending()
        return order.order_id

    def tick(self) -> list[Event]:
        return self.run(self.engine.tick)

    def position(self) -> int:
        return sum(p.net_qty for (_, s, _), p in self.engine.state.ledger.position_items())

    def order(self, order_id: str) -> Order:
        order = self.engine.state.ledger.order(order_id)
        assert order is not None
        return order

    def restart(self) -> None:
        """A new engine from the journaled records, as recovery builds it."""
        state = GatewayState(
            ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
        )
        for record in self.records:
            state.apply(record.event)
            state.sequence = record.sequence
        self.engine = build_engine(self.cfg, self.clock)
        self.engine.reload(state)


def recording(cfg: GatewayConfig) -> Session:
    """A session whose engine journals the quotes (journal.record_quotes), as the
    gateway's does: a replay needs them."""
    s = Session(cfg)
    instruments = InstrumentRegistry([])
    s.engine = ExecutionEngine(
        state=GatewayState(
            ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
        ),
        clock=s.clock,
        quotes=quote_book(cfg.market_data, instruments, s.clock),
        venue=build_venue(cfg, instruments),
        risk=RiskEngine(cfg.execution, TradingCalendar(cfg.trading_day)),
        record_quotes=cfg.journal.record_quotes,
    )
    return s


def intent(
    side: str, qty: int, price: str | None = None, *, product: Product = Product.CNC
) -> OrderIntent:
    return OrderIntent(
        symbol=INFY,
        strategy_code="s",
        side=Side[side],
        qty=qty,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        product=product,
        validity=Validity.DAY,
        price=None if price is None else Decimal(price),
    )


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]
