"""Instrument reference data: tick and lot sizes, from Kite's instrument dump."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

DEFAULT_TICK = Decimal("0.05")
DEFAULT_LOT = 1


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    tick_size: Decimal = DEFAULT_TICK
    lot_size: int = DEFAULT_LOT
    # The exchange's most a single order may be (instruments.freeze_qty); None: no limit.
    freeze_qty: int | None = None

    def snap_up(self, price: Decimal) -> Decimal:
        """The nearest tick at or above price."""
        return (price / self.tick_size).to_integral_value(ROUND_CEILING) * self.tick_size

    def snap_down(self, price: Decimal) -> Decimal:
        """The nearest tick at or below price."""
        return (price / self.tick_size).to_integral_value(ROUND_FLOOR) * self.tick_size

    def nearest_tick(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value() * self.tick_size

    def is_on_tick(self, price: Decimal) -> bool:
        return price % self.tick_size == 0


class InstrumentRegistry:
    """Looks instruments up by "EXCHANGE:TRADINGSYMBOL"; unknown symbols get the defaults."""

    def __init__(
        self,
        instruments: Iterable[Instrument] = (),
        *,
        default_tick: Decimal = DEFAULT_TICK,
        default_lot: int = DEFAULT_LOT,
        freeze_qty: Mapping[str, int] | None = None,
    ) -> None:
        # Freeze quantities by symbol, or by a prefix ending in "*" ("NFO:NIFTY*"): NSE
        # sets them per underlying. The longest matching key wins.
        self._freeze = dict(freeze_qty or {})
        self._by_symbol: Mapping[str, Instrument] = {
            i.symbol: self._with_freeze(i) for i in instruments
        }
        self._default_tick = default_tick
        self._default_lot = default_lot

    def get(self, symbol: str) -> Instrument:
        found = self._by_symbol.get(symbol)
        if found is not None:
            return found
        default = Instrument(symbol, self._default_tick, self._default_lot)
        return self._with_freeze(default) if self._freeze else default

    def _with_freeze(self, instrument: Instrument) -> Instrument:
        if not self._freeze:
            return instrument
        symbol = instrument.symbol
        if symbol in self._freeze:
            return replace(instrument, freeze_qty=self._freeze[symbol])
        matches = [key for key in self._freeze if key.endswith("*") and symbol.startswith(key[:-1])]
        if not matches:
            return instrument
        return replace(instrument, freeze_qty=self._freeze[max(matches, key=len)])

    def __len__(self) -> int:
        return len(self._by_symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol


class InstrumentFileError(ValueError):
    pass


_REQUIRED_COLUMNS = ("tradingsymbol", "exchange", "tick_size", "lot_size")


def load_kite_instruments(path: Path) -> list[Instrument]:
    """Parse Kite Connect's instrument dump (the CSV of GET /instruments)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InstrumentFileError(f"{path}: missing column(s) {', '.join(missing)}")
        instruments = []
        for line_no, row in enumerate(reader, start=2):
            if row.get("segment") == "INDICES":
                continue  # an index has no tick or lot (0 in the dump) and cannot be traded
            try:
                tick = Decimal(row["tick_size"])
                lot = int(row["lot_size"])
            except (ArithmeticError, ValueError) as e:
                raise InstrumentFileError(f"{path}:{line_no}: bad tick_size/lot_size: {e}") from e
            if tick <= 0 or lot <= 0:
                raise InstrumentFileError(f"{path}:{line_no}: tick_size and lot_size must be > 0")
            symbol = f"{row['exchange']}:{row['tradingsymbol']}"
            instruments.append(Instrument(symbol, tick.normalize(), lot))
        return instruments
