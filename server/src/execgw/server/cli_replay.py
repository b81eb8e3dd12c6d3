"""`execgw replay JOURNAL --config OTHER.yaml`: the what-if (replay.py), printed."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from execgw.server.chain import DEFAULT_KEY_ENV, ChainKeyError, optional_chain_from_env
from execgw.server.config import ConfigError, load_config
from execgw.server.journal import Journal, JournalError
from execgw.server.replay import Comparison, OrderResult, ReplayError, compare


def add_replay_command(sub: Any) -> None:
    cmd = sub.add_parser(
        "replay",
        help="re-run a journal's recorded quotes and orders through another config and "
        "print the difference in fills and PnL",
    )
    cmd.add_argument("journal", help="journal file (read only; needs journal.record_quotes)")
    cmd.add_argument("--config", required=True, help="the config to replay through (paper)")
    cmd.add_argument("--json", action="store_true", help="print JSON (every order) instead")
    cmd.add_argument("--all", action="store_true", help="list unchanged orders too")
    cmd.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config))
        journal = Journal(
            Path(args.journal), read_only=True, chain=optional_chain_from_env(DEFAULT_KEY_ENV)
        )
        try:
            result = compare(journal, config)
        finally:
            journal.close()
    except (ConfigError, JournalError, ReplayError, ChainKeyError) as e:
        print(f"execgw: replay failed: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(result), indent=2, sort_keys=True))
    else:
        render(result, show_all=args.all)
    return 0


def _text(value: Decimal | int | None) -> str | None:
    return None if value is None else str(value)


def _order_json(order: OrderResult | None) -> dict[str, Any] | None:
    if order is None:
        return None
    found: dict[str, Any] = {
        "status": order.status,
        "qty": order.qty,
        "filled_qty": order.filled_qty,
        "avg_price": _text(order.avg_price),
        "charges": str(order.charges),
    }
    if order.children:
        found["children"] = [
            {"client_order_id": c.client_order_id, **(_order_json(c) or {})} for c in order.children
        ]
    return found


def _status_text(order: OrderResult) -> str:
    sliced = f" in {len(order.children)} slices" if order.children else ""
    return f"{order.status} {order.filled_qty}{sliced}"


def as_json(result: Comparison) -> dict[str, Any]:
    """Every order and strategy, recorded beside replayed; money as exact strings."""
    orders = []
    for key in result.order_keys():
        a, b = result.recorded.orders.get(key), result.replayed.orders.get(key)
        some = a or b
        assert some is not None
        orders.append(
            {
                "strategy_code": key[0],
                "client_order_id": key[1],
                "symbol": some.symbol,
                "side": some.side,
                "changed": result.differs(key),
                "recorded": _order_json(a),
                "replayed": _order_json(b),
            }
        )
    strategies = []
    for code in result.strategy_codes():
        row: dict[str, Any] = {"strategy_code": code}
        for name, run in (("recorded", result.recorded), ("replayed", result.replayed)):
            s = run.strategies.get(code)
            row[name] = (
                None
                if s is None
                else {
                    "filled_qty": s.filled_qty,
                    "realized_pnl_gross": str(s.realized_gross),
                    "charges": str(s.charges),
                    "realized_pnl_net": str(s.realized_net),
                }
            )
        strategies.append(row)
    return {"orders": orders, "strategies": strategies}


def render(result: Comparison, *, show_all: bool = False) -> None:
    from execgw.server.cli_render import line, table

    keys = result.order_keys()
    changed = [k for k in keys if result.differs(k)]
    rows = []
    for key in keys if show_all else changed:
        a, b = result.recorded.orders.get(key), result.replayed.orders.get(key)
        rows.append(
            [
                key[0],
                key[1],
                "-" if a is None else _status_text(a),
                "-" if a is None else _text(a.avg_price) or "-",
                "-" if b is None else _status_text(b),
                "-" if b is None else _text(b.avg_price) or "-",
            ]
        )
    table(
        f"orders: {len(changed)} of {len(keys)} changed",
        ["strategy", "client_order_id", "recorded", "rec avg", "replayed", "rep avg"],
        rows,
        numeric=["rec avg", "rep avg"],
    )
    srows = []
    zero = Decimal(0)
    for code in result.strategy_codes():
        sa, sb = result.recorded.strategies.get(code), result.replayed.strategies.get(code)
        gross_a, gross_b = (
            (zero if sa is None else sa.realized_gross),
            (zero if sb is None else sb.realized_gross),
        )
        net_a, net_b = (
            (zero if sa is None else sa.realized_net),
            (zero if sb is None else sb.realized_net),
        )
        srows.append(
            [
                code,
                str(0 if sa is None else sa.filled_qty),
                str(0 if sb is None else sb.filled_qty),
                str(gross_a),
                str(gross_b),
                str(net_a),
                str(net_b),
                str(net_b - net_a),
            ]
        )
    columns = ["strategy", "rec qty", "rep qty", "rec gross", "rep gross", "rec net", "rep net"]
    table("realized PnL by strategy", [*columns, "Δ net"], srows, numeric=[*columns[1:], "Δ net"])
    if not changed:
        line("the replay reproduces every recorded fill")
