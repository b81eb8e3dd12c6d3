"""The paper simulator's models on one scripted session: how much each costs a taker.

1,000 MARKET orders (CNC, DAY) of a 1,500-rupee stock, one per quote, random side and
1-390 shares; the book has a 1-3 tick spread, 20-400 shares at each touch and 200-3,000
shares traded between quotes; LTP is a random tick within the spread. After the last
order, 200 more quotes let remainders fill. Cost is each fill's price against the mid
of the quote it was priced at, in basis points against the trader, weighted by
quantity. Everything is seeded: the same run prints the same table.

    .venv/bin/python tools/sim_compare.py [--seed 7] [--orders 1000]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from execgw.server.clock import ManualClock
from execgw.server.config import parse_config
from execgw.server.domain import OrderIntent, OrderType, Product, Quote, Side, Validity
from execgw.server.events import OrderFilled
from execgw.server.replay import build_engine

SYMBOL = "NSE:ACME"
TICK = Decimal("0.05")
ORDERS = 1_000
DRAIN_QUOTES = 200

DEFAULT = "default: LTP + fixed 5 bps"
TOUCH_5BPS = "touch + 5 bps"
RICHEST = "touch + cap + volume_share, volume_limit 0.1"
_TOUCH_CAP = {"price_source": "touch", "cap_to_displayed_qty": True}
_IMPACT = {"slippage_model": "volume_share", "impact_k": 0.1}

# fixed_bps and volume_share are alternatives (FillModel.taker_price moves the price by
# one or the other), so no row adds the default's 5 bps to impact.
MODELS: list[tuple[str, dict[str, Any]]] = [
    (DEFAULT, {"slippage_bps": 5.0}),
    ("touch, 0 bps", {"slippage_bps": 0.0, "simulator": {"price_source": "touch"}}),
    (TOUCH_5BPS, {"slippage_bps": 5.0, "simulator": {"price_source": "touch"}}),
    ("touch + displayed-qty cap + 5 bps", {"slippage_bps": 5.0, "simulator": _TOUCH_CAP}),
    ("LTP, volume_share", {"simulator": _IMPACT}),
    ("touch, volume_share", {"simulator": {"price_source": "touch", **_IMPACT}}),
    ("touch + cap + volume_share", {"simulator": {**_TOUCH_CAP, **_IMPACT}}),
    (RICHEST, {"simulator": {**_TOUCH_CAP, **_IMPACT, "volume_limit": 0.1}}),
]


@dataclass(frozen=True, slots=True)
class Step:
    quote: Quote
    order: OrderIntent | None


@dataclass(frozen=True, slots=True)
class Outcome:
    fills: int
    filled: int
    cost_bps: Decimal


def session(seed: int, start: datetime, orders: int = ORDERS) -> list[Step]:
    rng = random.Random(seed)
    bid_ticks = 30_000  # 1,500.00
    volume = 0
    steps: list[Step] = []
    for i in range(orders + DRAIN_QUOTES):
        bid_ticks += rng.randint(-2, 2)
        ask_ticks = bid_ticks + rng.randint(1, 3)
        ltp_ticks = rng.randint(bid_ticks, ask_ticks)
        volume += rng.randint(200, 3_000)
        quote = Quote(
            symbol=SYMBOL,
            ltp=ltp_ticks * TICK,
            timestamp=start + timedelta(seconds=i),
            bid=bid_ticks * TICK,
            ask=ask_ticks * TICK,
            bid_qty=rng.randint(20, 400),
            ask_qty=rng.randint(20, 400),
            volume=volume,
        )
        order = None
        if i < orders:
            order = OrderIntent(
                symbol=SYMBOL,
                strategy_code="bench",
                side=Side.BUY if rng.random() < 0.5 else Side.SELL,
                qty=rng.randint(1, 390),
                order_type=OrderType.MARKET,
                product=Product.CNC,
                validity=Validity.DAY,
            )
        steps.append(Step(quote, order))
    return steps


def run(execution: dict[str, Any], steps: list[Step], start: datetime) -> Outcome:
    config = parse_config(
        {
            "market_data": {"source": "external", "price_band_pct": None},
            "trading_day": {"mis_square_off": None},
            "execution": {
                **execution,
                "capital_rupees": 1e12,
                "pre_trade": {"orders_per_second": 1e6, "order_burst": 1_000_000},
                "circuit_breakers": {
                    "max_daily_loss_rupees": 1e12,
                    "max_daily_drawdown_pct": 1.0,
                    "max_trades_per_day": 1_000_000,
                    "max_trades_per_strategy_per_day": 1_000_000,
                    "max_loss_streak": 1_000_000,
                },
            },
        },
        source="sim_compare",
    )
    clock = ManualClock(start)
    engine = build_engine(config, clock)
    fills = filled = 0
    cost = Decimal(0)
    for i, step in enumerate(steps):
        clock.set(step.quote.timestamp)
        records = []
        engine.begin_command()
        engine.apply_quotes([step.quote])
        records += engine.take_pending()
        if step.order is not None:
            engine.begin_command()
            engine.submit(step.order, f"o{i}")
            records += engine.take_pending()
        for record in records:
            if isinstance(record.event, OrderFilled):
                fill, quote = record.event.fill, record.event.quote
                mid = (quote.bid + quote.ask) / 2
                sign = 1 if fill.side is Side.BUY else -1
                cost += sign * (fill.price - mid) / mid * fill.qty
                fills += 1
                filled += fill.qty
    bps = (cost / filled * 10_000).quantize(Decimal("0.01")) if filled else Decimal(0)
    return Outcome(fills, filled, bps)


START = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)  # 09:30 in Kolkata


def compare(seed: int, orders: int = ORDERS) -> dict[str, Outcome]:
    """Every model's outcome on the same session, by the model's name."""
    steps = session(seed, START, orders)
    return {name: run(execution, steps, START) for name, execution in MODELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--orders", type=int, default=ORDERS)
    args = parser.parse_args()
    ordered = sum(s.order.qty for s in session(args.seed, START, args.orders) if s.order)
    print(f"{args.orders:,} market orders, {ordered:,} shares, seed {args.seed}\n")
    print("| model | fills | shares filled | cost vs mid (bps) |")
    print("|---|---:|---:|---:|")
    for name, outcome in compare(args.seed, args.orders).items():
        print(f"| {name} | {outcome.fills:,} | {outcome.filled:,} | {outcome.cost_bps} |")


if __name__ == "__main__":
    main()
