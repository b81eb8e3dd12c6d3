"""`execgw top`: a live full-screen view of the account, following StreamFills.

`render_top` is pure (a TopState in, a rich renderable out) so it is tested without a
terminal; `run_top` owns the terminal, the keys and the stream."""

from __future__ import annotations

import os
import queue
import select
import sys
import termios
import threading
import tty
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import tzinfo
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from execgw.client import ExecgwError, ExecutionClient
from execgw.server import cli_render as render
from execgw.v1 import gateway_pb2, orders_pb2

_OPEN = frozenset(
    {
        orders_pb2.ORDER_STATUS_PLACED,
        orders_pb2.ORDER_STATUS_PARTIAL,
        orders_pb2.ORDER_STATUS_SUBMITTED,
        orders_pb2.ORDER_STATUS_PENDING_CANCEL,
        orders_pb2.ORDER_STATUS_AMBIGUOUS,
    }
)
BAR_WIDTH = 20
LAST_FILLS = 8


@dataclass
class TopState:
    """Everything the screen shows; the latest snapshot from the gateway."""

    target: str
    risk: gateway_pb2.GetRiskStateResponse | None = None
    positions: list[orders_pb2.Position] = field(default_factory=list)
    open_orders: list[orders_pb2.ExecutionResult] = field(default_factory=list)
    fills: deque[orders_pb2.ExecutionEvent] = field(
        default_factory=lambda: deque(maxlen=LAST_FILLS)
    )
    last_sequence: int = 0
    status: str = ""
    prompt: str = ""


def _state_name(value: orders_pb2.TradingState.ValueType) -> str:
    return orders_pb2.TradingState.Name(value).removeprefix("TRADING_STATE_")


def _number(text: str) -> Decimal:
    try:
        return Decimal(text) if text else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def breaker_bar(value: str, limit: str, tripped: bool, width: int = BAR_WIDTH) -> Text:
    """How much of its limit a breaker has used, as a bar of `width` cells: full and
    red when tripped, yellow past three quarters, else green."""
    cap = abs(_number(limit))
    share = min(abs(_number(value)) / cap, Decimal(1)) if cap else Decimal(0)
    if tripped:
        share = Decimal(1)
    cells = int((share * width).to_integral_value(rounding=ROUND_CEILING))
    style = "bold red" if tripped else "yellow" if share >= Decimal("0.75") else "green"
    bar = Text("\N{FULL BLOCK}" * cells, style=style)
    bar.append("\N{LIGHT SHADE}" * (width - cells), style="dim")
    return bar


def _breaker_number(name: str, text: str) -> str:
    return render.money(text) if name.endswith("_rupees") else render.plain(text)


def render_top(state: TopState, zone: tzinfo) -> RenderableType:
    """The whole screen for a state; no I/O."""
    parts: list[RenderableType] = []
    head = Text(f"execgw top  {state.target}  seq {state.last_sequence}", style="bold")
    if state.status:
        head.append(f"  {state.status}", style="yellow")
    parts.append(head)
    risk = state.risk
    if risk is None:
        parts.append(Text("waiting for the gateway\N{HORIZONTAL ELLIPSIS}"))
    else:
        account = Table.grid(padding=(0, 2))
        account.add_row(
            Text(f"ACCOUNT {_state_name(risk.state)}", style=_state_style(risk.state)),
            f"day {risk.trading_day}",
            f"day pnl {render.money(risk.day_pnl_decimal)}",
            f"equity {render.money(risk.equity_decimal)}",
            f"drawdown {render.percent(risk.drawdown_pct_decimal)}",
            f"trades {risk.trades_today}",
        )
        parts.append(account)
        breakers = Table(title="breakers", title_justify="left", expand=False)
        for column in ("BREAKER", "SCOPE", "USED", "VALUE", "LIMIT", "STATE"):
            breakers.add_column(column)
        for b in risk.breakers:
            breakers.add_row(
                b.name,
                b.strategy_code or "account",
                breaker_bar(b.value_decimal, b.limit_decimal, b.tripped),
                _breaker_number(b.name, b.value_decimal),
                _breaker_number(b.name, b.limit_decimal),
                Text(f"TRIPPED \N{RIGHTWARDS ARROW} {_state_name(b.trips_to)}", style="bold red")
                if b.tripped
                else Text("ok", style="green"),
            )
        parts.append(breakers)
        strategies = Table(title="strategies", title_justify="left")
        for column in ("STRATEGY", "STATE", "TRADES USED", "LOSS STREAK", "REALIZED"):
            strategies.add_column(column)
        for s in risk.strategies:
            strategies.add_row(
                s.strategy_code,
                Text(_state_name(s.state), style=_state_style(s.state)),
                str(s.trades_today),
                str(s.loss_streak),
                render.money(s.realized_pnl_decimal),
            )
        parts.append(strategies)
    positions = Table(title="positions", title_justify="left")
    for column in ("STRATEGY", "SYMBOL", "NET", "AVG", "LAST", "REALIZED", "MTM"):
        positions.add_column(column)
    for p in state.positions:
        positions.add_row(
            p.strategy_code,
            p.symbol,
            str(p.net_qty),
            render.money(p.avg_price_decimal),
            render.money(p.last_price_decimal) if p.last_price_decimal else "-",
            render.money(p.realized_pnl_decimal),
            render.money(p.unrealized_pnl_decimal),
        )
    parts.append(positions)
    orders = Table(title="open orders", title_justify="left")
    for column in ("ORDER", "STRATEGY", "SYMBOL", "SIDE", "QTY", "FILLED", "PRICE", "STATUS"):
        orders.add_column(column)
    for o in state.open_orders:
        orders.add_row(
            o.order_id,
            o.strategy_code,
            o.symbol,
            orders_pb2.Side.Name(o.side).removeprefix("SIDE_"),
            str(o.qty),
            str(o.filled_qty),
            render.money(o.price_decimal) if o.price_decimal else "MKT",
            orders_pb2.OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_"),
        )
    parts.append(orders)
    fills = Table(title="last fills", title_justify="left")
    for column in ("SEQ", "TIME", "STRATEGY", "SYMBOL", "SIDE", "QTY", "PRICE"):
        fills.add_column(column)
    for event in reversed(state.fills):
        f = event.fill
        fills.add_row(
            str(event.sequence),
            render.when_ms(event.timestamp, zone),
            f.strategy_code,
            f.symbol,
            orders_pb2.Side.Name(f.side).removeprefix("SIDE_"),
            str(f.qty),
            render.money(f.price_decimal),
        )
    parts.append(fills)
    footer = state.prompt or "h halt \N{MIDDLE DOT} r resume \N{MIDDLE DOT} q quit"
    parts.append(Text(footer, style="bold reverse" if state.prompt else "dim"))
    return Panel(Group(*parts), title="execgw", border_style="blue")


def _state_style(value: orders_pb2.TradingState.ValueType) -> str:
    return "green" if value == orders_pb2.TRADING_STATE_ACTIVE else "bold red"


def refresh(client: ExecutionClient, state: TopState) -> None:
    """Take a fresh snapshot: GetRiskState, GetPositions, ListOrders."""
    state.risk = client.risk_state()
    state.positions = list(client.positions())
    state.open_orders = [o for o in client.list_orders() if o.status in _OPEN]


@contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys one by one, no echo); None when it is no terminal."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_key(fd: int | None, wait: float) -> str:
    if fd is None:
        return ""
    ready, _, _ = select.select([fd], [], [], wait)
    return os.read(fd, 1).decode(errors="replace") if ready else ""


def run_top(
    client: ExecutionClient,
    target: str,
    give_up_after: float,
    zone: tzinfo,
    actor: str,
    follow: Callable[..., Iterator[orders_pb2.ExecutionEvent]],
) -> None:
    """Drive the screen until `q`; raises what the stream raises (gave up, refused)."""
    state = TopState(target=target)
    inbox: queue.Queue[object] = queue.Queue()

    def pump() -> None:
        try:
            for event in follow(
                client, target, give_up_after, say=lambda text: inbox.put(("say", text))
            ):
                inbox.put(event)
        except BaseException as e:  # handed to the main thread, which re-raises it
            inbox.put(e)

    threading.Thread(target=pump, daemon=True, name="top-stream").start()
    pending: str = ""  # "halt" or "resume" while the y/N question is up
    with (
        _keys() as fd,
        Live(render_top(state, zone), screen=True, auto_refresh=False, console=Console()) as live,
    ):
        while True:
            changed = False
            key = _read_key(fd, 0.05)
            if key:
                changed = True
                if pending:
                    pending, state.prompt, answer = "", "", pending
                    if key in "yY":
                        try:
                            if answer == "halt":
                                client.halt("execgw top", actor=actor)
                            else:
                                client.resume("execgw top", actor=actor)
                            refresh(client, state)
                        except ExecgwError as e:
                            state.status = f"{answer} failed: {e.code.name}: {e.details}"
                elif key in "qQ":
                    return
                elif key in "hHrR":
                    pending = "halt" if key in "hH" else "resume"
                    state.prompt = f"{pending} the account? y/N"
            stale = False
            while True:
                try:
                    item = inbox.get(timeout=0.0 if (key or fd is not None) else 0.05)
                except queue.Empty:
                    break
                changed = True
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, tuple):
                    state.status = str(item[1])
                    continue
                assert isinstance(item, orders_pb2.ExecutionEvent)
                if state.status and not item.HasField("heartbeat"):
                    state.status = ""
                if state.risk is None:
                    stale = True  # first sign of life: take the first snapshot
                if item.HasField("heartbeat"):
                    state.status = ""
                    continue
                state.last_sequence = item.sequence
                if item.HasField("fill"):
                    state.fills.append(item)
                stale = True
            if stale:
                try:
                    refresh(client, state)
                except ExecgwError as e:
                    state.status = f"{e.code.name}: {e.details}"
            if changed:
                live.update(render_top(state, zone), refresh=True)
