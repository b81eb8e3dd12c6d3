"""Operator subcommands: thin clients over the same RPCs a strategy uses."""

from __future__ import annotations

import argparse
import enum
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from google.protobuf.message import Message

from execgw.client import ExecgwError, ExecutionClient, OrderStatus, limit, market, stop
from execgw.server import cli_render as render
from execgw.v1 import orders_pb2

# The bearer token, when the gateway has auth on; --token-file wins over it.
TOKEN_ENV = "EXECGW_TOKEN"


class ClientExit(enum.IntEnum):
    """Exit codes of the client subcommands (README "Operating the gateway")."""

    OK = 0
    GATEWAY = 1  # the gateway refused the call or could not be reached (gRPC status shown)
    USAGE = 2  # bad options: a token or TLS file unreadable, a missing pair
    REJECTED = 3  # submit or cancel: the order came back REJECTED (reason on stderr)
    GAVE_UP = 4  # tail or top: the gateway stayed unreachable for --give-up-after seconds
    INTERRUPTED = 130  # Ctrl-C
    CLOSED_PIPE = 141  # the reader of stdout went away (`| head`): quiet, no traceback


class _UsageError(Exception):
    pass


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token from --token-file, else $EXECGW_TOKEN; None without either."""
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise _UsageError(f"cannot read --token-file {args.token_file}: {why}") from None
        if not token:
            raise _UsageError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class _SetupError(Exception):
    """The client cannot be made from the options given (a TLS file, a missing pair)."""


def _client(args: argparse.Namespace) -> ExecutionClient:
    if (args.cert_file is None) != (args.key_file is None):
        raise _SetupError("--cert-file and --key-file go together (client certificate and key)")
    cert = None if args.cert_file is None else (args.cert_file, args.key_file)
    try:
        return ExecutionClient(
            args.target,
            timeout=args.timeout,
            auth=_token(args),
            tls=True if args.tls else None,
            verify=args.ca_file,
            cert=cert,
        )
    except OSError as e:
        raise _SetupError(f"cannot read {e.filename}: {e.strerror}") from None
    except ValueError as e:  # a malformed token or TLS option; never shows the token
        raise _SetupError(str(e)) from None


def _zone(args: argparse.Namespace) -> tzinfo:
    try:
        return ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _UsageError(f"unknown --timezone {args.timezone!r}") from None


class _GaveUp(Exception):
    """The gateway stayed unreachable for --give-up-after seconds."""


# Stream failures that mean "the gateway is not there (yet)": try again until give-up.
_RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def follow(
    client: ExecutionClient,
    target: str,
    give_up_after: float,
    *,
    strategy_codes: Sequence[str] = (),
    symbols: Sequence[str] = (),
    from_sequence: int = 0,
    updates: bool = True,
    say: Callable[[str], None] | None = None,
) -> Iterator[orders_pb2.ExecutionEvent]:
    """StreamFills that says "connecting"/"reconnecting" on stderr, resumes after the
    last sequence seen, and raises _GaveUp after give_up_after seconds without a
    gateway. Heartbeats are yielded too (they prove the gateway is there)."""
    report = say or (lambda text: print(text, file=sys.stderr, flush=True))
    report(f"connecting to {target}\N{HORIZONTAL ELLIPSIS}")
    # The last sequence accounted for (shown, or covered by a heartbeat's head), and
    # whether the gateway has told us where we stand: from then on a reconnect resumes
    # right after it instead of going live and missing what happened in between.
    last = from_sequence - 1 if from_sequence else 0
    anchored = bool(from_sequence)
    unreachable_since: float | None = None
    connected = False
    attempt = 0
    while True:
        stream = client.stream_fills(
            strategy_codes=strategy_codes,
            symbols=symbols,
            from_sequence=last + 1 if anchored else 0,
            include_order_updates=updates,
            include_risk_events=updates,
            reconnect=False,
            heartbeats=True,
        )
        try:
            for event in stream:
                unreachable_since = None
                connected = anchored = True
                attempt = 0
                if event.HasField("heartbeat"):
                    last = max(last, event.heartbeat.head_sequence)
                    yield event
                    continue
                if event.sequence <= last:
                    continue
                last = event.sequence
                yield event
            return
        except ExecgwError as e:
            if e.code not in _RETRY_CODES:
                raise
        now = time.monotonic()
        if unreachable_since is None:
            unreachable_since = now
            if connected:  # one line per outage, not one per retry
                resume = f" (resuming from sequence {last + 1})" if last else ""
                report(f"reconnecting\N{HORIZONTAL ELLIPSIS}{resume}")
        if now - unreachable_since >= give_up_after:
            raise _GaveUp(
                f"gave up: {target} unreachable for {give_up_after:g}s"
                + (f" (last sequence {last})" if last else "")
            )
        delay = min(0.1 * 2**attempt, 2.0, give_up_after - (now - unreachable_since))
        time.sleep(max(delay, 0.0))
        attempt += 1


def _tail(args: argparse.Namespace) -> int:
    zone = _zone(args)
    with _client(args) as client:
        stream = follow(
            client,
            args.target,
            args.give_up_after,
            strategy_codes=args.strategy or (),
            symbols=args.symbol or (),
            from_sequence=args.from_sequence,
            updates=not args.fills_only,
        )
        count = 0
        for event in stream:
            if event.HasField("heartbeat"):
                continue
            count += 1
            print(_describe(event, zone) if not args.json else _json_line(event, zone), flush=True)
            if args.limit and count >= args.limit:
                break
    return 0


def _top(args: argparse.Namespace) -> int:
    from execgw.server import cli_top

    zone = _zone(args)
    with _client(args) as client:
        cli_top.run_top(client, args.target, args.give_up_after, zone, _actor(args), follow)
    return 0


def _json_line(message: Message, zone: tzinfo) -> str:
    """The same shape as every other --json: exact decimal strings, local times."""
    return json.dumps(render.json_object(message, zone), sort_keys=True)


def _describe(event: orders_pb2.ExecutionEvent, zone: tzinfo) -> str:
    kind = event.WhichOneof("payload")
    head = f"{event.sequence:>8} {render.when_ms(event.timestamp, zone)}"
    if kind == "fill":
        f = event.fill
        side = orders_pb2.Side.Name(f.side).removeprefix("SIDE_")
        return (
            f"{head} FILL  {f.strategy_code} {side} {f.qty} {f.symbol} "
            f"@ {render.money(f.price_decimal) or f'{f.price:.2f}'} "
            f"order {f.order_id}"
        )
    if kind == "order_update":
        o = event.order_update
        status = OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_")
        reason = orders_pb2.RejectReason.Name(o.reject_reason).removeprefix("REJECT_REASON_")
        extra = (
            f" {reason}: {o.message}" if o.reject_reason else (f" {o.message}" if o.message else "")
        )
        return f"{head} ORDER {o.order_id} {o.strategy_code} {o.symbol} {status}{extra}"
    if kind == "risk_event":
        r = event.risk_event
        what = orders_pb2.RiskEventKind.Name(r.kind).removeprefix("RISK_EVENT_KIND_")
        scope = r.strategy_code or "account"
        return f"{head} RISK  {what} {scope} {r.breaker} {r.message} (by {r.actor})"
    return f"{head} {kind}"


ORDER_COLUMNS = (
    "ORDER",
    "CREATED",
    "STRATEGY",
    "SYMBOL",
    "SIDE",
    "TYPE",
    "PRODUCT",
    "QTY",
    "FILLED",
    "PRICE",
    "TRIGGER",
    "AVG PRICE",
    "STATUS",
    "REASON",
    "MESSAGE",
)


def _order_row(r: orders_pb2.ExecutionResult, zone: tzinfo) -> list[str]:
    reason = orders_pb2.RejectReason.Name(r.reject_reason).removeprefix("REJECT_REASON_")
    return [
        r.order_id,
        render.when(r.created_at if r.HasField("created_at") else r.timestamp, zone),
        r.strategy_code,
        r.symbol,
        orders_pb2.Side.Name(r.side).removeprefix("SIDE_"),
        orders_pb2.OrderType.Name(r.order_type).removeprefix("ORDER_TYPE_"),
        orders_pb2.Product.Name(r.product).removeprefix("PRODUCT_"),
        str(r.qty),
        str(r.filled_qty),
        render.money(r.price_decimal),
        render.money(r.trigger_price_decimal),
        render.money(r.avg_price_decimal),
        OrderStatus.Name(r.status).removeprefix("ORDER_STATUS_"),
        reason if r.reject_reason else "",
        r.message,
    ]


def _orders(args: argparse.Namespace) -> int:
    # --json prints page by page as it goes; a table needs its widths, so it gathers the
    # rows first (short strings, not the messages).
    zone = _zone(args)
    rows: list[list[str]] = []
    with _client(args) as client:
        page_token = ""
        while True:
            page = client.list_orders_page(
                strategy_code=args.strategy, symbol=args.symbol, page_token=page_token
            )
            for result in page.results:
                if args.json:
                    render.print_json(result, zone)
                else:
                    rows.append(_order_row(result, zone))
            page_token = page.next_page_token
            if not page_token:
                break
    if not args.json:
        if rows:
            render.table(None, ORDER_COLUMNS, rows)
        else:
            render.line("no orders")
    return 0


POSITION_COLUMNS = (
    "STRATEGY",
    "SYMBOL",
    "PRODUCT",
    "NET QTY",
    "BUY QTY",
    "SELL QTY",
    "AVG PRICE",
    "LAST",
    "REALIZED",
    "UNREALIZED",
)


def _positions(args: argparse.Namespace) -> int:
    zone = _zone(args)
    with _client(args) as client:
        positions = client.positions(args.strategy)
    if args.json:
        for position in positions:
            render.print_json(position, zone)
        return 0
    if not positions:
        render.line("no positions")
        return 0
    render.table(
        None,
        POSITION_COLUMNS,
        (
            [
                p.strategy_code,
                p.symbol,
                orders_pb2.Product.Name(p.product).removeprefix("PRODUCT_"),
                str(p.net_qty),
                str(p.buy_qty),
                str(p.sell_qty),
                render.money(p.avg_price_decimal),
                render.money(p.last_price_decimal),
                render.money(p.realized_pnl_decimal),
                render.money(p.unrealized_pnl_decimal),
            ]
            for p in positions
        ),
    )
    return 0


def _state(value: orders_pb2.TradingState.ValueType) -> str:
    return orders_pb2.TradingState.Name(value).removeprefix("TRADING_STATE_")


ACCOUNT_COLUMNS = (
    "STATE",
    "DAY",
    "REALIZED",
    "UNREALIZED",
    "DAY PNL",
    "EQUITY",
    "PEAK",
    "DRAWDOWN",
    "TRADES",
    "MIS ENTRIES",
    "UNMARKED",
    "STALE",
)


def _risk(args: argparse.Namespace) -> int:
    zone = _zone(args)
    with _client(args) as client:
        risk = client.risk_state(args.strategy)
    if args.json:
        render.print_json(risk, zone)
        return 0
    render.table(
        "account",
        ACCOUNT_COLUMNS,
        [
            [
                _state(risk.state),
                risk.trading_day,
                render.money(risk.realized_pnl_decimal),
                render.money(risk.unrealized_pnl_decimal),
                render.money(risk.day_pnl_decimal),
                render.money(risk.equity_decimal),
                render.money(risk.peak_equity_decimal),
                render.percent(risk.drawdown_pct_decimal),
                str(risk.trades_today),
                "closed" if risk.mis_entries_closed else "open",
                " ".join(risk.unmarked_symbols),
                " ".join(risk.stale_symbols),
            ]
        ],
    )
    render.table(
        "breakers",
        ("BREAKER", "SCOPE", "VALUE", "LIMIT", "TRIPPED", "TRIPS TO", "TRIPPED AT", "MESSAGE"),
        (
            [
                b.name,
                b.strategy_code or "account",
                _breaker_number(b.name, b.value_decimal),
                _breaker_number(b.name, b.limit_decimal),
                "yes" if b.tripped else "no",
                _state(b.trips_to),
                render.when(b.tripped_at, zone),
                b.message,
            ]
            for b in risk.breakers
        ),
    )
    if risk.strategies:
        render.table(
            "strategies",
            ("STRATEGY", "STATE", "TRADES", "LOSS STREAK", "REALIZED"),
            (
                [
                    s.strategy_code,
                    _state(s.state),
                    str(s.trades_today),
                    str(s.loss_streak),
                    render.money(s.realized_pnl_decimal),
                ]
                for s in risk.strategies
            ),
        )
    else:
        render.line("no strategies")
    return 0


def _breaker_number(name: str, text: str) -> str:
    return render.money(text) if name.endswith("_rupees") else render.plain(text)


def _halt(args: argparse.Namespace) -> int:
    zone = _zone(args)
    with _client(args) as client:
        done = client.halt(args.reason, actor=_actor(args), strategy_code=args.strategy)
    if args.json:
        render.print_json(done, zone)
    else:
        render.table(
            None,
            ("SCOPE", "STATE", "CANCELLED ORDERS"),
            [[args.strategy or "account", _state(done.state), str(done.cancelled_orders)]],
        )
    return 0


def _resume(args: argparse.Namespace) -> int:
    zone = _zone(args)
    with _client(args) as client:
        done = client.resume(args.reason, actor=_actor(args), strategy_code=args.strategy)
    if args.json:
        render.print_json(done, zone)
    else:
        render.table(
            None,
            ("SCOPE", "STATE", "STILL TRIPPED"),
            [[args.strategy or "account", _state(done.state), " ".join(done.still_tripped)]],
        )
    return 0


def _actor(args: argparse.Namespace) -> str:
    """With a token the gateway records the token's name: send no actor of our own."""
    if args.actor:
        return str(args.actor)
    return "" if _token(args) else _whoami()


def _submit(args: argparse.Namespace) -> int:
    zone = _zone(args)
    common: dict[str, Any] = {"strategy_code": args.strategy, "product": args.product}
    if args.trigger is not None:
        intent = stop(args.symbol, args.side, args.qty, args.trigger, price=args.price, **common)
    elif args.price is not None:
        intent = limit(args.symbol, args.side, args.qty, args.price, **common)
    else:
        intent = market(args.symbol, args.side, args.qty, **common)
    with _client(args) as client:
        result = client.submit(intent, args.client_order_id)
    _print_result(result, args.json, zone)
    return _order_outcome(result)


def _cancel(args: argparse.Namespace) -> int:
    zone = _zone(args)
    with _client(args) as client:
        result = client.cancel(args.order_id)
    _print_result(result, args.json, zone)
    return _order_outcome(result)


def _print_result(result: orders_pb2.ExecutionResult, as_json: bool, zone: tzinfo) -> None:
    if as_json:
        render.print_json(result, zone)
    else:
        render.table(None, ORDER_COLUMNS, [_order_row(result, zone)])


def _order_outcome(result: orders_pb2.ExecutionResult) -> int:
    """REJECTED is exit 3, with the reason and message on stderr; anything else is 0."""
    if result.status != OrderStatus.ORDER_STATUS_REJECTED:
        return ClientExit.OK
    reason = orders_pb2.RejectReason.Name(result.reject_reason).removeprefix("REJECT_REASON_")
    order = f"order {result.order_id}" if result.order_id else "order"
    print(f"execgw: {order} REJECTED: {reason}: {result.message}", file=sys.stderr)
    return ClientExit.REJECTED


def _whoami() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ExecgwError as e:
            print(f"execgw: {e.code.name}: {e.details}", file=sys.stderr)
            return ClientExit.GATEWAY
        except _GaveUp as e:
            print(f"execgw: {e}", file=sys.stderr)
            return ClientExit.GAVE_UP
        except (_UsageError, _SetupError) as e:
            print(f"execgw: {e}", file=sys.stderr)
            return ClientExit.USAGE
        except KeyboardInterrupt:
            return ClientExit.INTERRUPTED

    return run


def add_client_commands(sub: Any) -> None:
    """Register the operator subcommands on the `execgw` parser."""

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str) -> Any:
        parser = sub.add_parser(name, help=text)
        parser.add_argument("--target", default="127.0.0.1:50051", help="gateway HOST:PORT")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
        parser.add_argument(
            "--token-file",
            metavar="FILE",
            help=f"file holding the bearer token (default: ${TOKEN_ENV}, if set)",
        )
        tls = parser.add_argument_group(
            "TLS", "any of these makes the connection TLS; each defaults to its variable"
        )
        tls.add_argument(
            "--tls",
            action="store_true",
            default=os.environ.get("EXECGW_TLS", "") not in ("", "0"),
            help="use TLS with gRPC's default roots ($EXECGW_TLS=1)",
        )
        tls.add_argument(
            "--ca-file",
            default=os.environ.get("EXECGW_CA_FILE") or None,
            help="CA bundle the gateway's certificate must chain to ($EXECGW_CA_FILE)",
        )
        tls.add_argument(
            "--cert-file",
            default=os.environ.get("EXECGW_CERT_FILE") or None,
            help="client certificate, for a gateway that requires one ($EXECGW_CERT_FILE)",
        )
        tls.add_argument(
            "--key-file",
            default=os.environ.get("EXECGW_KEY_FILE") or None,
            help="the client certificate's private key ($EXECGW_KEY_FILE)",
        )
        parser.add_argument(
            "--timezone",
            default=render.DEFAULT_TIMEZONE,
            help=f"show times in this zone (default: {render.DEFAULT_TIMEZONE}, the trading day's)",
        )
        if name not in ("tail", "top"):
            parser.add_argument("--json", action="store_true", help="one JSON object per line")
        parser.set_defaults(func=_guarded(func))
        return parser

    tail = command("tail", _tail, "follow fills, order updates and risk events live")
    tail.add_argument("--strategy", action="append", help="only this strategy (repeatable)")
    tail.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    tail.add_argument("--from-sequence", type=int, default=0, help="replay from this sequence")
    tail.add_argument("--fills-only", action="store_true", help="no order updates or risk events")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--limit", type=int, default=0, help="stop after this many events")
    tail.add_argument(
        "--give-up-after",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="exit 4 when the gateway stays unreachable this long (default: 30)",
    )

    top = command("top", _top, "live full-screen view: breakers, positions, orders, fills")
    top.add_argument(
        "--give-up-after",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="exit 4 when the gateway stays unreachable this long (default: 30)",
    )
    top.add_argument("--actor", help="who halts or resumes; defaults to cli:$USER")

    orders = command("orders", _orders, "the day's order book")
    orders.add_argument("--strategy")
    orders.add_argument("--symbol")

    positions = command("positions", _positions, "positions with PnL")
    positions.add_argument("--strategy")

    risk = command("risk", _risk, "breakers, counters and limits")
    risk.add_argument("--strategy")

    for name, func, text in (
        ("halt", _halt, "kill switch: stop new orders and cancel resting ones"),
        ("resume", _resume, "release a halt and tripped breakers"),
    ):
        parser = command(name, func, text)
        parser.add_argument("--reason", required=True, help="recorded in the journal")
        parser.add_argument(
            "--actor", help="who; defaults to cli:$USER (with a token, the token's name)"
        )
        parser.add_argument("--strategy", help="only this strategy")

    submit = command("submit", _submit, "place an order (MARKET, or LIMIT with --price)")
    submit.add_argument("symbol")
    submit.add_argument("side", choices=("BUY", "SELL", "buy", "sell"))
    submit.add_argument("qty", type=int)
    submit.add_argument("--strategy", required=True)
    submit.add_argument("--product", default="MIS", choices=("MIS", "NRML", "CNC"))
    submit.add_argument("--price", type=float)
    submit.add_argument("--trigger", type=float, help="stop trigger (SL with --price, else SL-M)")
    submit.add_argument("--client-order-id")

    cancel = command("cancel", _cancel, "cancel a resting order")
    cancel.add_argument("order_id")
