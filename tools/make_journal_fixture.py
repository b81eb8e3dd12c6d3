"""Writes tests/fixtures/journal_v2/: a journal holding every event type, and the state
the writing version rebuilds from it.

The journal format must stay readable by every later version: tests/test_journal_fixture.py
replays this file and compares the state with `expected_state.json`. Regenerate it only
when the format changes on purpose, and keep the old one as a new fixture directory.

It drives a real gateway through the real client with a manual clock, so every event is
what the gateway itself journals: fills, a stop that triggers, a cancel, a rejection, a
halt and resume, a tripped breaker, MIS square-off, rollovers, marks, equity peaks and a
snapshot. BaselineMarked is not among them: a gateway that journals marks only writes it
for journals from before marks; the codec's property test covers its encoding.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from execgw.client import ExecutionClient, limit, market, stop
from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig, parse_config
from execgw.server.journal import Journal
from execgw.server.recovery import rebuild, state_to_json
from execgw.v1 import market_data_pb2

# 10:00 IST, Friday 27 November 2026.
START = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


class Served:
    def __init__(self, config: GatewayConfig, clock: ManualClock) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.gateway: Gateway = self.call(self._build(config, clock))
        port: int = self.call(self.gateway.start())
        self.client = ExecutionClient(f"127.0.0.1:{port}")

    @staticmethod
    async def _build(config: GatewayConfig, clock: ManualClock) -> Gateway:
        return Gateway(config, clock=clock)

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def tick(self) -> None:
        self.call(self.gateway.core.tick())

    def quote(self, symbol: str, ltp: float) -> None:
        self.client.publish_quotes([market_data_pb2.Quote(symbol=symbol, ltp=ltp)])

    def stop(self) -> None:
        self.client.close()
        self.call(self.gateway.stop(grace=0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    journal = out / "journal.db"
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "journal": {"path": str(journal), "snapshot_every": 25},
            "market_data": {"source": "external", "marks_every_s": 5.0},
            "execution": {
                "slippage_bps": 0.0,
                "pre_trade": {"max_order_qty": 1000},
                "circuit_breakers": {"max_loss_streak": 1},
            },
            "trading_day": {"tick_interval_s": 60},
        },
        source="fixture",
    )
    clock = ManualClock(START)
    served = Served(config, clock)
    c = served.client
    served.quote("NSE:INFY", 1500.0)
    served.quote("NSE:TCS", 4100.0)
    c.submit(market("NSE:INFY", "BUY", 10, strategy_code="S1", product="NRML"), "f-1")
    c.submit(market("NSE:TCS", "BUY", 2, strategy_code="S2"), "f-2")  # MIS
    resting = c.submit(limit("NSE:TCS", "BUY", 5, 4000.0, strategy_code="S2"), "f-3")
    c.cancel(resting.order_id)
    c.submit(market("NSE:INFY", "BUY", 5000, strategy_code="S2"), "f-4")  # max_order_qty
    c.submit(stop("NSE:INFY", "SELL", 10, 1450.0, strategy_code="S1", product="NRML"), "f-5")
    clock.advance(timedelta(seconds=6))
    served.quote("NSE:INFY", 1520.0)  # equity peak, marks
    clock.advance(timedelta(seconds=6))
    served.quote("NSE:INFY", 1445.0)  # stop triggers and fills: a losing round trip
    c.halt(strategy_code="S3", reason="fixture halt")
    c.resume(strategy_code="S3", reason="fixture resume")
    c.submit(market("NSE:INFY", "BUY", 4, strategy_code="S4", product="NRML"), "f-6")
    # 15:21 IST: MIS square-off flattens S2's TCS.
    clock.set(datetime(2026, 11, 27, 9, 51, tzinfo=UTC))
    served.quote("NSE:TCS", 4110.0)
    served.tick()
    served.quote("NSE:SBIN", 820.0)
    c.submit(market("NSE:SBIN", "BUY", 3, strategy_code="S5", product="CNC"), "f-7")
    served.stop()

    # A restart before SBIN's mark was journaled: its fill's quote marks it.
    clock.set(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))  # Monday 08:30 IST
    served = Served(config, clock)
    served.tick()
    served.quote("NSE:SBIN", 830.0)
    served.quote("NSE:INFY", 1500.0)
    clock.advance(timedelta(seconds=6))
    served.quote("NSE:INFY", 1501.0)
    c = served.client
    c.submit(limit("NSE:INFY", "BUY", 7, 1490.0, strategy_code="S1", product="NRML"), "m-1")
    c.submit(market("NSE:SBIN", "SELL", 3, strategy_code="S5", product="CNC"), "m-2")
    c.submit(limit("NSE:INFY", "BUY", 1, 2000.0, strategy_code="S4"), "m-3")  # collar
    served.stop()

    reader = Journal(journal, read_only=True)
    try:
        state = rebuild(reader)
        kinds = sorted({row.kind for row in reader.rows()})
    finally:
        reader.close()
    (out / "expected_state.json").write_text(state_to_json(state) + "\n", encoding="utf-8")
    for leftover in ("journal.db-shm", "journal.db-wal", "journal.db.lock"):
        (out / leftover).unlink(missing_ok=True)
    print(f"wrote {journal} at sequence {state.sequence}; event kinds: {', '.join(kinds)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/fixtures/journal_v2"))
