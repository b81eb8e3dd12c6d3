"""Shared fixtures: a real gateway on loopback, in its own thread and event loop, so
tests can drive it with the blocking client as well as the asyncio one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig, parse_config
from execgw.server.ledger import Ledger

FIXTURES = Path(__file__).parent / "fixtures"
# 10:00 IST on a Friday: inside the NSE session.
MARKET_OPEN = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


class RunningGateway:
    """A Gateway served from a background thread; `call` runs a coroutine on its loop."""

    def __init__(self, config: GatewayConfig, clock: ManualClock) -> None:
        self.config = config
        self.clock = clock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.gateway: Gateway = self.call(self._build())
        self.port: int = self.call(self.gateway.start())
        self.target = f"127.0.0.1:{self.port}"

    async def _build(self) -> Gateway:
        return Gateway(self.config, clock=self.clock)

    @property
    def ledger(self) -> Ledger:
        """The ledger as the core holds it now (a rebuild replaces it)."""
        ledger: Ledger = self.gateway.core._engine.state.ledger
        return ledger

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def stop(self) -> None:
        try:
            self.call(self.gateway.stop(grace=1.0))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def make_config(tmp_path: Path, **overrides: Any) -> GatewayConfig:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "journal": {"path": str(tmp_path / "journal.db")},
        "market_data": {"source": "external"},
        # Tests that are not about risk must not trip over the throttle or trade counts;
        # the ManualClock never refills a rate bucket on its own.
        "execution": {
            "pre_trade": {"orders_per_second": 1_000_000.0, "order_burst": 1_000_000},
            "circuit_breakers": {
                "max_trades_per_day": 1_000_000,
                "max_trades_per_strategy_per_day": 1_000_000,
            },
        },
    }
    return parse_config(_merge(data, overrides), source="test")


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MARKET_OPEN)


@pytest.fixture
def gateway(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    running = RunningGateway(make_config(tmp_path), clock)
    try:
        yield running
    finally:
        running.stop()
