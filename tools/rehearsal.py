"""`make rehearsal`: a traced dry-run session, end to end (issue 12, "A real run").

Writes a config (`mode: live`, `execution.dry_run: true` with `dry_run_fills: simulate`,
quotes from PublishQuotes only, spans to a jsonl file in a session) into a directory,
starts the real gateway on it (`python -m execgw.server.cli serve`), and drives a
scripted session through the Python client: quotes for a few NSE symbols, then orders
from three strategies:

- MOM: MARKET orders, each FILLED at once by the simulator;
- MR: LIMIT orders that rest; the near ones fill on a later quote that reaches them,
  the far ones are cancelled;
- RSK: orders the risk checks reject (over its max_order_qty, outside the price collar,
  a symbol it may not trade), each REJECTED with that reason;
- one request the gateway refuses as INVALID_ARGUMENT (quantity 0);
- a few MARKET orders in a second session, named per call (`x-execgw-session`).

Every answer is checked against what the script expects, and the fills are read back
from StreamFills. Then the gateway is stopped with SIGTERM (which exports the last
spans), every span in the file is checked for the session and `execgw.dry_run`, and
`execgw trace summary FILE --session ID` is run and printed. Exit 1 if any step failed.

The same --seed and --orders give the same orders, prices and outcomes (the latencies
differ). Nothing waits on wall time: the gateway's readiness is its "listening" line
and the client's wait_ready, answers are read as they come, and timeouts only guard
against a hang. No Kite credentials are needed: a dry run never reaches the broker.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from execgw.client import (
    ExecgwError,
    ExecutionClient,
    ExecutionResult,
    InvalidArgument,
    OrderStatus,
    Quote,
    RejectReason,
    limit,
    market,
    session,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG_NAME = "rehearsal.yaml"
JOURNAL_NAME = "journal.db"
TRACES_NAME = "traces.jsonl"
LOG_NAME = "gateway.log"
# Files a run writes; a --dir is cleared of them (and only them) before it starts.
OWN_FILES = (
    CONFIG_NAME,
    TRACES_NAME,
    LOG_NAME,
    *(JOURNAL_NAME + suffix for suffix in ("", "-wal", "-shm", ".lock")),
)

# Starting prices; every price the script sends is on the 0.05 tick.
START_PRICES = {
    "NSE:INFY": Decimal("1500.00"),
    "NSE:RELIANCE": Decimal("2900.00"),
    "NSE:TCS": Decimal("4100.00"),
    "NSE:SBIN": Decimal("820.00"),
}
TICK = Decimal("0.05")
# Per quote round, each symbol moves by at most this fraction.
WALK = Decimal("0.002")
# A LIMIT meant to fill sits this far from LTP; the sweep moves LTP twice as far.
NEAR = Decimal("0.002")
SWEEP = Decimal("0.004")
# A LIMIT meant to be cancelled sits this far: no sweep reaches it.
FAR = Decimal("0.03")
# RSK's limits, and the collar, that its orders are built to break.
COLLAR_PCT = 0.05
OUTSIDE_COLLAR = Decimal("0.08")
RSK_MAX_QTY = 50
RSK_SYMBOLS = ["NSE:INFY", "NSE:TCS", "NSE:SBIN"]
RSK_FORBIDDEN = "NSE:RELIANCE"
ORDERS_PER_ROUND = 10

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# Guards against a hang; never a way to wait for something to happen.
CALL_TIMEOUT_S = 10.0

FILLED = OrderStatus.ORDER_STATUS_FILLED
PLACED = OrderStatus.ORDER_STATUS_PLACED
REJECTED = OrderStatus.ORDER_STATUS_REJECTED
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED


class StepFailed(Exception):
    """A step of the session did not go as scripted."""


def _on_tick(price: Decimal, rounding: str = ROUND_DOWN) -> Decimal:
    return (price / TICK).to_integral_value(rounding=rounding) * TICK


def default_session() -> str:
    today = datetime.now(ZoneInfo("Asia/Kolkata")).date()
    return f"rehearsal-{today.isoformat()}"


def write_config(directory: Path, session_id: str) -> Path:
    config: dict[str, Any] = {
        "mode": "live",
        "listen": "127.0.0.1:0",  # the gateway prints the port it bound
        "journal": {"path": JOURNAL_NAME},
        "market_data": {"source": "external"},
        # Round the clock: MIS entries are not refused after 15:20 IST.
        "trading_day": {"mis_square_off": None},
        "execution": {
            "dry_run": True,
            "dry_run_fills": "simulate",
            "pre_trade": {
                # The order rate is a wall-clock token bucket: kept out of reach, so the
                # outcomes depend on the seed alone.
                "orders_per_second": 10_000.0,
                "order_burst": 10_000,
                "price_collar_pct": COLLAR_PCT,
                "strategies": {
                    "RSK": {"max_order_qty": RSK_MAX_QTY, "allowed_symbols": RSK_SYMBOLS}
                },
            },
            # Breakers out of reach too: a rehearsal of N orders must not trip on N.
            "circuit_breakers": {
                "max_daily_loss_rupees": 1_000_000_000.0,
                "max_daily_drawdown_pct": 1.0,
                "max_trades_per_day": 1_000_000,
                "max_trades_per_strategy_per_day": 1_000_000,
                "max_loss_streak": 1_000_000,
            },
        },
        "telemetry": {"exporter": "jsonl", "path": TRACES_NAME, "session_id": session_id},
        "server": {"shutdown_grace_s": 5.0},
    }
    path = directory / CONFIG_NAME
    path.write_text(
        "# Written by tools/rehearsal.py: a traced dry-run session.\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return path


@dataclass
class Gateway:
    proc: subprocess.Popen[str]
    target: str
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> int:
        """SIGTERM (the gateway drains and exports its last spans); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise StepFailed(
                f"the gateway did not stop within {STOP_TIMEOUT_S}s of SIGTERM"
            ) from None
        return self.proc.returncode


def start_gateway(config: Path, log: Path) -> Gateway:
    env = dict(os.environ)
    for name in ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "KITE_API_SECRET"):
        env.pop(name, None)  # a dry run needs none: proven by running without them
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "execgw.server.cli", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=config.parent,
        )
    first: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: first.append(out.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    line = first[0].strip() if first else ""
    gateway = Gateway(proc, "", log)
    # "execgw listening on 127.0.0.1:PORT mode=live dry_run=true tls=off"
    words = line.split()
    if len(words) < 4 or words[:3] != ["execgw", "listening", "on"]:
        if proc.poll() is None:
            gateway.stop()
        raise StepFailed(
            f"the gateway did not start (exit {proc.poll()}); its log:\n{gateway.log_tail()}"
        )
    if "dry_run=true" not in words:
        gateway.stop()
        raise StepFailed(f"the gateway is not a dry run: {line!r}")
    gateway.target = words[3]
    print(f"rehearsal: {line}", flush=True)
    return gateway


@dataclass
class Tally:
    """What the script placed and expects, and what went wrong."""

    submitted: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    fills: int = 0
    alt_orders: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"rehearsal: FAILED: {message}", file=sys.stderr, flush=True)


def _name(status: OrderStatus.ValueType) -> str:
    return OrderStatus.Name(status).removeprefix("ORDER_STATUS_")


def _reason(reason: RejectReason.ValueType) -> str:
    return RejectReason.Name(reason).removeprefix("REJECT_REASON_")


class Session:
    """The scripted session: one client, prices kept by the script, a seeded RNG."""

    def __init__(
        self, client: ExecutionClient, rng: random.Random, alt_session: str, tally: Tally
    ) -> None:
        self.client = client
        self.rng = rng
        self.alt_session = alt_session
        self.tally = tally
        self.ltp = dict(START_PRICES)
        self._coid = 0

    def _next_coid(self, strategy: str) -> str:
        self._coid += 1
        return f"reh-{strategy}-{self._coid:05d}"

    def publish(self, prices: dict[str, Decimal]) -> None:
        quotes = [Quote(symbol=s, ltp=float(p)) for s, p in prices.items()]
        applied = self.client.publish_quotes(quotes, timeout=CALL_TIMEOUT_S)
        if applied != len(quotes):
            raise StepFailed(f"{len(quotes) - applied} of {len(quotes)} quotes were refused")

    def walk(self) -> None:
        """One quote round: each symbol moves by at most WALK, on the tick."""
        for symbol, price in self.ltp.items():
            move = Decimal(self.rng.randint(-20, 20)) / 20 * WALK
            self.ltp[symbol] = _on_tick(price * (1 + move))
        self.publish(self.ltp)

    def _expect(
        self,
        what: str,
        result: ExecutionResult,
        status: OrderStatus.ValueType,
        reason: RejectReason.ValueType = RejectReason.REJECT_REASON_UNSPECIFIED,
    ) -> bool:
        """Count the order's outcome (its last); False, and a failure, if not `status`."""
        got = _name(result.status)
        if result.status == REJECTED:
            got += f" {_reason(result.reject_reason)}"
        self.tally.outcomes[got] += 1
        # The contract: dry_run is "the order went to the dry-run venue"; an order the
        # gateway rejected before the venue says false, though its id ends in -DRY.
        if result.status != REJECTED and not result.dry_run:
            self.tally.fail(f"{what}: {result.order_id} is not marked dry_run")
        if result.status != status or result.reject_reason != reason:
            want = _name(status) + (f" {_reason(reason)}" if status == REJECTED else "")
            self.tally.fail(f"{what}: {result.order_id} is {got}, expected {want}")
            return False
        return True

    def market_order(self, *, alt: bool = False) -> None:
        symbol = self.rng.choice(sorted(self.ltp))
        side = self.rng.choice(("BUY", "SELL"))
        qty = self.rng.randint(1, 20)
        intent = market(symbol, side, qty, strategy_code="MOM", tag="rehearsal")
        self.tally.submitted += 1
        if alt:
            with session(self.alt_session):
                result = self.client.submit(intent, self._next_coid("MOM"))
            self.tally.alt_orders += 1
        else:
            result = self.client.submit(intent, self._next_coid("MOM"))
        if self._expect(f"MARKET {side} {qty} {symbol}", result, FILLED):
            self.tally.fills += 1

    def limit_order(self, fate: str) -> tuple[str, str] | None:
        """A resting LIMIT: `fill` near LTP (a sweep reaches it), `cancel` far from it."""
        symbol = self.rng.choice(sorted(self.ltp))
        side = self.rng.choice(("BUY", "SELL"))
        qty = self.rng.randint(1, 20)
        away = NEAR if fate == "fill" else FAR
        ltp = self.ltp[symbol]
        if side == "BUY":
            price = _on_tick(ltp * (1 - away), ROUND_DOWN)
        else:
            price = _on_tick(ltp * (1 + away), ROUND_UP)
        intent = limit(symbol, side, qty, price, strategy_code="MR", tag="rehearsal")
        result = self.client.submit(intent, self._next_coid("MR"))
        self.tally.submitted += 1
        if result.status != PLACED or not result.dry_run:
            self.tally.outcomes[_name(result.status)] += 1
            self.tally.fail(f"LIMIT {side} {qty} {symbol} @ {price}: {_name(result.status)}")
            return None
        return result.order_id, symbol

    def risk_order(self, kind: int) -> None:
        """An order RSK's limits reject: qty, collar or symbol, by `kind`."""
        symbol = self.rng.choice(RSK_SYMBOLS)
        side = self.rng.choice(("BUY", "SELL"))
        if kind == 0:
            qty = self.rng.randint(RSK_MAX_QTY + 1, 2 * RSK_MAX_QTY)
            intent = market(symbol, side, qty, strategy_code="RSK")
            reason = RejectReason.REJECT_REASON_MAX_ORDER_QTY
        elif kind == 1:
            sign = 1 if side == "BUY" else -1
            price = _on_tick(self.ltp[symbol] * (1 + sign * OUTSIDE_COLLAR))
            intent = limit(symbol, side, 5, price, strategy_code="RSK")
            reason = RejectReason.REJECT_REASON_PRICE_COLLAR
        else:
            intent = market(RSK_FORBIDDEN, side, 5, strategy_code="RSK")
            reason = RejectReason.REJECT_REASON_SYMBOL_NOT_ALLOWED
        result = self.client.submit(intent, self._next_coid("RSK"))
        self.tally.submitted += 1
        self._expect(f"RSK kind {kind}", result, REJECTED, reason)
        if not result.message:
            self.tally.fail(f"RSK kind {kind}: {result.order_id} rejected with no message")

    def invalid_request(self) -> None:
        """Quantity 0: the gateway refuses the call itself (INVALID_ARGUMENT), no order."""
        intent = market("NSE:INFY", "BUY", 0, strategy_code="MOM")
        self.tally.submitted += 1
        try:
            result = self.client.submit(intent, self._next_coid("MOM"))
        except InvalidArgument as e:
            self.tally.outcomes["INVALID_ARGUMENT (no order)"] += 1
            print(f"rehearsal: the invalid request was refused: {e}", flush=True)
        else:
            self.tally.fail(f"qty 0 was not refused: {result.order_id} {_name(result.status)}")

    def sweep(self, resting: list[tuple[str, str]]) -> None:
        """A dip and a pop past every near LIMIT of those symbols, then back."""
        symbols = sorted({symbol for _, symbol in resting})
        if not symbols:
            return
        base = {s: self.ltp[s] for s in symbols}
        self.publish({s: _on_tick(p * (1 - SWEEP)) for s, p in base.items()})
        self.publish({s: _on_tick(p * (1 + SWEEP), ROUND_UP) for s, p in base.items()})
        self.publish(base)
        for order_id, _ in resting:
            result = self.client.get_order(order_id, timeout=CALL_TIMEOUT_S)
            if self._expect(f"resting LIMIT {order_id} after the sweep", result, FILLED):
                self.tally.fills += 1

    def cancel_all(self, resting: list[tuple[str, str]]) -> None:
        for order_id, _ in resting:
            result = self.client.cancel(order_id, timeout=CALL_TIMEOUT_S)
            self._expect(f"cancel of {order_id}", result, CANCELLED)


def plan(orders: int, rng: random.Random) -> list[str]:
    """The session's submits, in order: one kind each."""
    alt = max(1, orders // 20)
    rest = orders - 1 - alt
    risk = max(3, rest * 15 // 100)
    fill = max(1, rest * 20 // 100)
    cancel = max(1, rest * 15 // 100)
    marketable = rest - risk - fill - cancel
    if marketable < 1:
        raise SystemExit(f"rehearsal: --orders {orders} is too few (at least 10)")
    kinds = (
        ["market"] * marketable
        + ["fill"] * fill
        + ["cancel"] * cancel
        + [f"risk{i % 3}" for i in range(risk)]
        + ["invalid"]
    )
    rng.shuffle(kinds)
    return kinds + ["alt"] * alt


def run_session(session: Session, kinds: list[str]) -> None:
    for start in range(0, len(kinds), ORDERS_PER_ROUND):
        session.walk()
        to_fill: list[tuple[str, str]] = []
        to_cancel: list[tuple[str, str]] = []
        for kind in kinds[start : start + ORDERS_PER_ROUND]:
            if kind == "market":
                session.market_order()
            elif kind == "alt":
                session.market_order(alt=True)
            elif kind in ("fill", "cancel"):
                placed = session.limit_order(kind)
                if placed is not None:
                    (to_fill if kind == "fill" else to_cancel).append(placed)
            elif kind.startswith("risk"):
                session.risk_order(int(kind[-1]))
            else:
                session.invalid_request()
        session.sweep(to_fill)
        session.cancel_all(to_cancel)


def read_fills(client: ExecutionClient, expected: int, tally: Tally) -> None:
    """Every fill, read back from StreamFills (replayed from the journal)."""
    events: queue.Queue[object] = queue.Queue()

    def pump() -> None:
        try:
            for event in client.stream_fills(from_sequence=1, reconnect=False):
                events.put(event)
        except Exception as e:  # the end of the stream, to the reader: even a surprise
            events.put(e)

    threading.Thread(target=pump, daemon=True, name="fills").start()
    seen = 0
    while seen < expected:
        try:
            item = events.get(timeout=CALL_TIMEOUT_S)
        except queue.Empty:
            tally.fail(f"StreamFills gave {seen} fills of {expected}, then nothing")
            return
        if isinstance(item, Exception):
            tally.fail(f"StreamFills ended after {seen} fills of {expected}: {item}")
            return
        seen += 1
    print(f"rehearsal: StreamFills replayed all {seen} fills", flush=True)


def check_spans(path: Path, sessions: set[str], tally: Tally) -> Counter[str]:
    """Every span carries a session of this run and execgw.dry_run true; spans by session."""
    by_session: Counter[str] = Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        attributes = json.loads(line).get("attributes", {})
        session_id = attributes.get("execgw.session_id")
        if session_id not in sessions or attributes.get("execgw.dry_run") is not True:
            tally.fail(f"{path.name}:{number}: session {session_id!r}, dry_run not true")
            continue
        by_session[session_id] += 1
    return by_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=200, help="submits (default 200)")
    parser.add_argument("--seed", type=int, default=42, help="the script's RNG (default 42)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the config, journal, spans and log go (default: a temp dir)",
    )
    parser.add_argument("--session", default=None, help="default rehearsal-<IST date>")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (a --dir is always kept)"
    )
    args = parser.parse_args(argv)
    if args.orders < 10:
        parser.error("--orders must be at least 10")
    from execgw.server.telemetry.attributes import SESSION_RULE, valid_session_id

    args.session = args.session or default_session()
    if len(args.session) > 60 or not valid_session_id(args.session):
        parser.error(f"--session must be {SESSION_RULE}, at most 60 (the run adds '.alt')")
    return args


def rehearse(directory: Path, args: argparse.Namespace) -> int:
    for name in OWN_FILES:
        (directory / name).unlink(missing_ok=True)
    alt_session = f"{args.session}.alt"
    config = write_config(directory, args.session)
    traces = directory / TRACES_NAME
    tally = Tally()
    try:
        gateway = start_gateway(config, directory / LOG_NAME)
    except StepFailed as e:
        print(f"rehearsal: FAILED: {e}", file=sys.stderr)
        return 1
    try:
        with ExecutionClient(gateway.target, timeout=CALL_TIMEOUT_S, retries=0) as client:
            client.wait_ready(READY_TIMEOUT_S)
            rng = random.Random(args.seed)
            run_session(Session(client, rng, alt_session, tally), plan(args.orders, rng))
            read_fills(client, tally.fills, tally)
    except (StepFailed, ExecgwError) as e:
        tally.fail(f"{type(e).__name__}: {e}")
    finally:
        code = gateway.stop()
    if code != 0:
        tally.fail(f"the gateway exited {code} on SIGTERM; its log:\n{gateway.log_tail()}")
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(tally.outcomes.items()))
    print(f"rehearsal: {tally.submitted} submits in session {args.session}: {outcomes}")
    if not traces.exists():
        tally.fail(f"no span file at {traces}")
        return 1
    by_session = check_spans(traces, {args.session, alt_session}, tally)
    print(
        f"rehearsal: {sum(by_session.values())} spans, every one with execgw.session_id and "
        f"execgw.dry_run true ({by_session[alt_session]} in {alt_session}, "
        f"{tally.alt_orders} orders)",
        flush=True,
    )
    if not by_session[alt_session]:
        tally.fail(f"no span of the per-call session {alt_session}")
    command = [sys.executable, "-m", "execgw.server.cli", "trace", "summary", str(traces)]
    command += ["--session", args.session]
    print(f"\n$ execgw trace summary {traces} --session {args.session}", flush=True)
    summary = subprocess.run(command, check=False, timeout=STOP_TIMEOUT_S)
    if summary.returncode != 0:
        tally.fail(f"execgw trace summary exited {summary.returncode}")
    if tally.failures:
        print(f"\nrehearsal: {len(tally.failures)} step(s) FAILED", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return rehearse(args.dir.resolve(), args)
    directory = Path(tempfile.mkdtemp(prefix="execgw-rehearsal-"))
    try:
        return rehearse(directory, args)
    finally:
        if args.keep:
            print(f"rehearsal: kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
