"""What the Kite ticker costs: ticks/s applied to the quote book, and the SubmitOrder
latency added while 200 symbols tick at 1 Hz each.

The gateway runs as `execgw serve` in a subprocess (market_data.source: kite) reading
the local stand-in (tests/kite_ticker_standin.py), which this process drives; orders
come from this process through the real asyncio client.

  1. rate:    frames of 50 ticks over 200 symbols sent back to back; the clock stops
              when the last tick is visible through GetQuote. Ticks the feed dropped
              because the writer was behind (it logs them) are not counted as applied.
  2. latency: SubmitOrder p50 and p99, sequentially, with the ticker idle and then with
              200 symbols ticking at 1 Hz each (a frame of 20 ticks every 100 ms).

    .venv/bin/python bench/kite_ticker.py
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from execgw.client import AsyncExecutionClient, exact, market

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

if TYPE_CHECKING:
    from tests.kite_ticker_standin import KiteTickerStandIn, TickSpec, encode_frame, encode_packet
else:
    from kite_ticker_standin import KiteTickerStandIn, TickSpec, encode_frame, encode_packet

SYMBOLS = 200
HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange"
)


def token(i: int) -> int:
    return ((1000 + i) << 8) | 1  # NSE


def symbol(i: int) -> str:
    return f"NSE:BENCH{i:03d}"


def packet(i: int, step: int) -> bytes:
    price = Decimal(1000 + i) + Decimal("0.05") * (step % 40)
    return encode_packet(TickSpec(token(i), price, volume=step, timestamp=1), "full")


def write_config(folder: Path, ws_root: str, port: int) -> Path:
    dump = folder / "instruments.csv"
    rows = [
        f"{token(i)},{1000 + i},BENCH{i:03d},B,0.0,,0.0,0.05,1,EQ,NSE,NSE" for i in range(SYMBOLS)
    ]
    dump.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    symbols = ", ".join(f'"{symbol(i)}"' for i in range(SYMBOLS))
    config = folder / "bench.yaml"
    config.write_text(
        f"""listen: 127.0.0.1:{port}
journal: {{path: {folder / "journal.db"}}}
instruments: {{csv: {dump}}}
market_data:
  source: kite
  stale_after_s: 3600
  kite: {{ws_root: "{ws_root}", symbols: [{symbols}]}}
trading_day: {{mis_square_off: null}}
execution:
  pre_trade: {{orders_per_second: 1000000.0, order_burst: 1000000}}
  circuit_breakers: {{max_trades_per_day: 1000000, max_trades_per_strategy_per_day: 1000000,
                      max_daily_loss_rupees: 100000000.0, max_daily_drawdown_pct: 1.0}}
""",
        encoding="utf-8",
    )
    return config


async def wait_for_ltp(client: AsyncExecutionClient, name: str, ltp: Decimal) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if exact((await client.get_quote(name)).ltp_decimal) == ltp:
                return
        except Exception:
            pass
        await asyncio.sleep(0.001)
    raise SystemExit(f"{name} never reached {ltp}")


async def submit_latencies(client: AsyncExecutionClient, count: int) -> list[float]:
    latencies = []
    for n in range(count):
        side = "BUY" if n % 2 == 0 else "SELL"
        start = time.perf_counter()
        await client.submit(market(symbol(n % SYMBOLS), side, 1, strategy_code="bench"))
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def describe(name: str, latencies: list[float]) -> tuple[float, str]:
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    return p50, f"{name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms over {len(latencies)} orders"


async def measure(standin: KiteTickerStandIn, target: str, log: Path) -> None:
    async with AsyncExecutionClient(target, timeout=30) as client:
        # Every symbol quoted once, so orders have prices.
        standin.blast([encode_frame(packet(i, 0) for i in range(SYMBOLS))])
        await wait_for_ltp(client, symbol(SYMBOLS - 1), Decimal(1000 + SYMBOLS - 1))

        frames = [
            encode_frame(packet((f * 50 + k) % SYMBOLS, f + 1) for k in range(50))
            for f in range(2_000)
        ]
        # Last, a price no frame before had: when it shows, everything before was applied.
        sentinel = Decimal("1002.10")
        frames.append(encode_frame([encode_packet(TickSpec(token(0), sentinel), "full")]))
        ticks = 50 * (len(frames) - 1) + 1
        start = time.perf_counter()
        standin.blast(frames)
        await wait_for_ltp(client, symbol(0), sentinel)
        elapsed = time.perf_counter() - start
        text = await asyncio.to_thread(log.read_text, encoding="utf-8")
        dropped = sum(int(m) for m in re.findall(r"dropped (\d+) older ones", text))
        applied = ticks - dropped
        print(
            f"rate: {applied / elapsed:,.0f} ticks/s applied to the quote book "
            f"({ticks:,} sent in {elapsed:.2f} s, {dropped:,} conflated away)"
        )

        await submit_latencies(client, 200)  # warm-up
        idle_p50, text = describe("SubmitOrder, ticker idle", await submit_latencies(client, 1000))
        print(text)

        def frame(n: int) -> bytes:
            first = (n % 10) * 20
            return encode_frame(packet(first + k, n // 10) for k in range(20))

        stop = standin.stream(frame, 0.1)
        try:
            busy_p50, text = describe(
                "SubmitOrder, 200 symbols at 1 Hz", await submit_latencies(client, 1000)
            )
        finally:
            stop()
        print(text)
        print(f"added SubmitOrder latency (p50): {busy_p50 - idle_p50:+.3f} ms")


def main() -> None:
    standin = KiteTickerStandIn(api_key="bench-key", access_token="bench-token")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = write_config(folder, standin.url, port)
        log = folder / "gateway.log"
        env = {**os.environ, "KITE_API_KEY": "bench-key", "KITE_ACCESS_TOKEN": "bench-token"}
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(ROOT / ".venv/bin/execgw"), "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            standin.wait_for("the gateway to subscribe", lambda: len(standin.connections) >= 1)
            standin.wait_subscribed([token(i) for i in range(SYMBOLS)], connection=1)
            asyncio.run(measure(standin, f"127.0.0.1:{port}", log))
        finally:
            server.terminate()
            server.wait(timeout=30)
            standin.stop()


if __name__ == "__main__":
    main()
