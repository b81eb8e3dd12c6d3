"""Instrument reference data: tick and lot sizes, from Kite's instrument dump."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

DEFAULT_TICK = Decimal("0.05")
DEFAULT_LOT = 1


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    tick_size: Decimal = DEFAULT_TICK
    lot_size: int = DEFAULT_LOT
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
    ) -> None:
        self._by_symbol: Mapping[str, Instrument] = {i.symbol: i for i in instruments}
        self._default_tick = default_tick
        self._default_lot = default_lot

    def get(self, symbol: str) -> Instrument:
        found = self._by_symbol.get(symbol)
        if found is not None:
            return found
        return Instrument(symbol, self._default_tick, self._default_lot)

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
