"""What a gateway with market_data.source: kite needs before it serves: credentials,
the instrument tokens of every configured symbol, and the ticks and lots of the dump."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from execgw.server.clock import Clock
from execgw.server.config import GatewayConfig
from execgw.server.marketdata.kite_credentials import KiteCredentials
from execgw.server.marketdata.kite_instruments import (
    TokenDirectory,
    fetch_with_sdk,
    load_directory,
)
from execgw.server.trading_calendar import TradingCalendar


@dataclass(frozen=True, slots=True)
class KiteSetup:
    credentials: KiteCredentials
    directory: TokenDirectory
    # Where the tokens came from: instruments.csv, or the day's cached dump.
    source: str


def prepare_kite(config: GatewayConfig, clock: Clock) -> KiteSetup:
    """Credentials from the environment and the token directory, or a ConfigError (no
    credentials, a configured symbol without a token) or InstrumentsUnavailable (the
    dump could not be fetched). Blocking: it may fetch the dump over HTTP."""
    credentials = KiteCredentials.from_env(purpose="market_data.source kite")
    today = TradingCalendar(config.trading_day).trading_day(clock.now())
    directory, source = load_directory(
        csv_path=config.instruments.csv,
        cache_dir=Path(config.journal.path).parent,
        today=today,
        fetch=lambda: fetch_with_sdk(credentials, config.broker.kite),
    )
    directory.require(config.market_data.kite.symbols, source)
    return KiteSetup(credentials, directory, source)
