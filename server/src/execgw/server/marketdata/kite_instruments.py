"""Instrument tokens for the Kite ticker: which number stands for "NSE:INFY".

The ticker speaks tokens only. They come from Kite's instrument dump: `instruments.csv`
when the config names one, else the dump the SDK's `instruments()` fetches from
`broker.kite.root`, once per trading day, cached beside the journal (Kite regenerates it
every morning, and F&O tokens change as contracts list and expire).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from execgw.server.config import ConfigError, KiteBrokerConfig
from execgw.server.instruments import Instrument
from execgw.server.marketdata.kite_credentials import KiteCredentials

log = logging.getLogger(__name__)

CACHE_PREFIX = "kite-instruments-"
_REQUIRED = ("instrument_token", "exchange", "tradingsymbol")


class InstrumentsUnavailable(OSError):
    """The dump could not be fetched (network, broker, credentials): start-up stops."""


@dataclass(frozen=True, slots=True)
class KiteInstrument:
    token: int
    symbol: str
    # 0 for indices (the dump gives them no tick and no lot: they are not tradable).
    tick_size: Decimal
    lot_size: int


class TokenDirectory:
    """Symbol ⇄ instrument token, both ways."""

    def __init__(self, instruments: Iterable[KiteInstrument]) -> None:
        self._instruments = {i.symbol: i for i in instruments}
        self._symbols = {i.token: i.symbol for i in self._instruments.values()}

    def token(self, symbol: str) -> int | None:
        found = self._instruments.get(symbol)
        return None if found is None else found.token

    def symbol(self, token: int) -> str | None:
        return self._symbols.get(token)

    def require(self, symbols: Iterable[str], source: str) -> dict[str, int]:
        """The token of each symbol, or a ConfigError naming every symbol that has none."""
        tokens: dict[str, int] = {}
        missing: list[str] = []
        for symbol in symbols:
            token = self.token(symbol)
            if token is None:
                missing.append(symbol)
            else:
                tokens[symbol] = token
        if missing:
            raise ConfigError(
                f"market_data.kite.symbols: no instrument token for {', '.join(missing)} in "
                f"{source}; check the exchange and trading symbol (EXCHANGE:TRADINGSYMBOL, as "
                "in Kite's instrument dump)"
            )
        return tokens

    def tradable_instruments(self) -> list[Instrument]:
        """Tick and lot of every tradable row, for the instrument registry."""
        return [
            Instrument(i.symbol, i.tick_size, i.lot_size)
            for i in self._instruments.values()
            if i.tick_size > 0 and i.lot_size > 0
        ]

    def __len__(self) -> int:
        return len(self._instruments)


def read_dump(path: Path) -> list[KiteInstrument]:
    """A Kite instrument dump (CSV); rows it cannot read are a ConfigError naming the line."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    f"{path}: no {', '.join(missing)} column: the Kite ticker needs the "
                    "instrument tokens of Kite's instrument dump"
                )
            return [_row(row, f"{path}:{line}") for line, row in enumerate(reader, start=2)]
    except OSError as e:
        raise ConfigError(f"cannot read instrument dump {path}: {e.strerror}") from None


def _row(row: Mapping[str, Any], where: str) -> KiteInstrument:
    try:
        token = int(row["instrument_token"])
        tick = Decimal(str(row.get("tick_size") or 0)).normalize()
        lot = int(float(row.get("lot_size") or 0))
    except (ValueError, InvalidOperation, TypeError):
        raise ConfigError(f"{where}: bad instrument_token, tick_size or lot_size") from None
    return KiteInstrument(token, f"{row['exchange']}:{row['tradingsymbol']}", tick, lot)


def fetch_with_sdk(credentials: KiteCredentials, broker: KiteBrokerConfig) -> list[dict[str, Any]]:
    """The whole dump, from the official SDK's `instruments()` (blocking HTTP)."""
    from kiteconnect import KiteConnect

    kite = KiteConnect(
        api_key=credentials.api_key,
        access_token=credentials.access_token,
        root=broker.root,
        timeout=broker.timeout_s,
    )
    try:
        rows: list[dict[str, Any]] = kite.instruments()
    except Exception as e:
        raise InstrumentsUnavailable(
            f"cannot fetch Kite's instrument dump from {broker.root}: "
            f"{credentials.redact(f'{type(e).__name__}: {e}')}"
        ) from None
    return rows


def load_directory(
    *,
    csv_path: str | None,
    cache_dir: Path,
    today: date,
    fetch: Callable[[], list[dict[str, Any]]],
) -> tuple[TokenDirectory, str]:
    """The token directory and where it came from (for messages).

    From `csv_path` when set; else from today's cache, fetching and caching the dump once
    per trading day. Older days' caches are deleted once today's is written."""
    if csv_path:
        return TokenDirectory(read_dump(Path(csv_path))), csv_path
    cached = cache_dir / f"{CACHE_PREFIX}{today.isoformat()}.csv"
    if cached.exists():
        return TokenDirectory(read_dump(cached)), str(cached)
    rows = fetch()
    if not rows:
        raise InstrumentsUnavailable("Kite's instrument dump came back empty")
    _write_atomically(cached, rows)
    for old in cache_dir.glob(f"{CACHE_PREFIX}*.csv"):
        if old != cached:
            old.unlink(missing_ok=True)
    log.info("fetched Kite's instrument dump (%d instruments) into %s", len(rows), cached)
    return TokenDirectory(_row(row, f"instrument dump row {i}") for i, row in enumerate(rows)), str(
        cached
    )


def _write_atomically(path: Path, rows: list[dict[str, Any]]) -> None:
    """The SDK's rows back as the dump's CSV, so a restart the same day reads it again.
    Written aside and renamed, so a crash never leaves half a dump that looks whole."""
    # 0700 like the journal's own folder: the dump is no secret, but the folder is private.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".partial")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
