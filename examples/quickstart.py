"""Ten lines of strategy against a running gateway (`make run` in another shell)."""

import sys

from execgw.client import ExecutionClient, OrderStatus, limit, market

with ExecutionClient(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051") as gw:
    ltp = gw.get_quote("NSE:INFY").ltp
    # CNC (delivery): unlike MIS (intraday), not refused after the 15:20 square-off.
    buy = gw.submit(market("NSE:INFY", "BUY", 10, strategy_code="demo", product="CNC"))
    print("BUY", OrderStatus.Name(buy.status), buy.filled_qty, "@", buy.avg_price, "ltp", ltp)
    target = round(ltp * 1.05, 1)  # 5% above: rests as a take-profit
    exit_order = gw.submit(
        limit("NSE:INFY", "SELL", 10, target, strategy_code="demo", product="CNC")
    )
    print("SELL", OrderStatus.Name(exit_order.status), "resting at", exit_order.price)
    for p in gw.positions("demo"):
        print(p.symbol, p.net_qty, "avg", p.avg_price, "unrealized", p.unrealized_pnl_decimal)
    print("cancel:", OrderStatus.Name(gw.cancel(exit_order.order_id).status))
