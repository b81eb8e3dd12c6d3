"""Instrument reference data from Kite's instrument dump, and tick snapping.

Reads tests/fixtures/instruments_nse.csv only (provenance in tests/fixtures/SOURCES.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, InvalidArgument, OrderStatus, limit, market
from execgw.server.clock import ManualClock
from execgw.server.instruments import (
    Instrument,
    InstrumentFileError,
    InstrumentRegistry,
    load_kite_instruments,
)

if TYPE_CHECKING:
    from tests.conftest import FIXTURES, RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import FIXTURES, RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

D = Decimal
NSE_CSV = FIXTURES / "instruments_nse.csv"
BANKBEES = "NSE:BANKBEES"  # tick 0.01 in the dump
CENTRALBK = "NSE:CENTRALBK-BE"  # tick 0.05


def test_fixture_provenance_is_recorded() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    assert "instruments_nse.csv: Zerodha Kite Connect instrument dump" in sources
    assert "zerodha/kiteconnect-mocks (commit c7a81238" in sources


def test_load_kite_instruments_reads_every_row() -> None:
    instruments = load_kite_instruments(NSE_CSV)
    assert len(instruments) == 99  # 100 lines, one header
    by_symbol = {i.symbol: i for i in instruments}
    assert len(by_symbol) == 99
    assert all(symbol.startswith("NSE:") for symbol in by_symbol)
    assert sum(1 for i in instruments if i.tick_size == D("0.01")) == 11
    assert sum(1 for i in instruments if i.tick_size == D("0.05")) == 88
    assert {i.lot_size for i in instruments} == {1}


def test_tick_and_lot_of_known_rows() -> None:
    by_symbol = {i.symbol: i for i in load_kite_instruments(NSE_CSV)}
    bees = by_symbol[BANKBEES]
    assert (bees.tick_size, bees.lot_size) == (D("0.01"), 1)
    assert str(bees.tick_size) == "0.01"
    central = by_symbol[CENTRALBK]
    assert (central.tick_size, central.lot_size) == (D("0.05"), 1)
    # Symbols keep Kite's punctuation: "HUDCO-N8", "CENTRALBK-BE".
    assert by_symbol["NSE:HUDCO-N8"].tick_size == D("0.01")


def test_registry_defaults_for_unknown_symbols() -> None:
    registry = InstrumentRegistry(load_kite_instruments(NSE_CSV))
    assert len(registry) == 99
    assert BANKBEES in registry
    assert INFY not in registry  # the mock dump has no INFY
    infy = registry.get(INFY)
    assert (infy.symbol, infy.tick_size, infy.lot_size) == (INFY, D("0.05"), 1)
    assert registry.get(BANKBEES).tick_size == D("0.01")
    custom = InstrumentRegistry([], default_tick=D("0.10"), default_lot=25)
    other = custom.get("NFO:ANYTHING")
    assert (other.tick_size, other.lot_size) == (D("0.10"), 25)


@pytest.mark.parametrize(
    ("tick", "price", "up", "down", "nearest"),
    [
        # 1234.55 x 1.0005 = 1235.167275
        ("0.05", "1235.167275", "1235.20", "1235.15", "1235.15"),
        # 1234.55 x 0.9995 = 1233.932725
        ("0.05", "1233.932725", "1233.95", "1233.90", "1233.95"),
        # already on the tick: nothing moves
        ("0.05", "1500.75", "1500.75", "1500.75", "1500.75"),
        ("0.05", "1500.03", "1500.05", "1500.00", "1500.05"),
        ("0.05", "1500.02", "1500.05", "1500.00", "1500.00"),
        # 123.45 x 1.0005 = 123.511725 ; on a 0.01 tick
        ("0.01", "123.511725", "123.52", "123.51", "123.51"),
        ("0.01", "123.388275", "123.39", "123.38", "123.39"),
        ("0.01", "0.001", "0.01", "0.00", "0.00"),
    ],
)
def test_snapping(tick: str, price: str, up: str, down: str, nearest: str) -> None:
    instrument = Instrument("NSE:X", D(tick), 1)
    assert instrument.snap_up(D(price)) == D(up)
    assert instrument.snap_down(D(price)) == D(down)
    assert instrument.nearest_tick(D(price)) == D(nearest)
    assert instrument.is_on_tick(D(up))
    assert instrument.is_on_tick(D(down))
    assert instrument.is_on_tick(D(price)) == (D(price) == D(up))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_column_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "no_lot.csv", "tradingsymbol,exchange,tick_size\nINFY,NSE,0.05\n")
    with pytest.raises(InstrumentFileError, match="lot_size"):
        load_kite_instruments(path)


@pytest.mark.parametrize(
    "row", ["INFY,NSE,abc,1", "INFY,NSE,0.05,x", "INFY,NSE,0,1", "INFY,NSE,0.05,0"]
)
def test_bad_tick_or_lot_names_the_line(tmp_path: Path, row: str) -> None:
    text = "tradingsymbol,exchange,tick_size,lot_size\nTCS,NSE,0.05,1\n" + row + "\n"
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(InstrumentFileError, match=r"bad\.csv:3"):
        load_kite_instruments(path)


# -- the dump in a running gateway --------------------------------------------------


@pytest.fixture
def client(tmp_path: Path, clock: ManualClock) -> Iterator[ExecutionClient]:
    config = make_config(tmp_path, instruments={"csv": str(NSE_CSV)})
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            yield c
    finally:
        running.stop()


def test_gateway_prices_on_each_instruments_own_tick(client: ExecutionClient) -> None:
    publish(client, BANKBEES, 123.45)
    publish(client, INFY, 123.45)
    # 123.45 x 1.0005 = 123.511725: BANKBEES (0.01) -> 123.52, INFY (0.05) -> 123.55
    assert client.submit(market(BANKBEES, "BUY", 1, strategy_code="tick")).avg_price == 123.52
    assert client.submit(market(INFY, "BUY", 1, strategy_code="tick")).avg_price == 123.55
    # 123.45 x 0.9995 = 123.388275: BANKBEES -> 123.38, INFY -> 123.35
    assert client.submit(market(BANKBEES, "SELL", 1, strategy_code="tick")).avg_price == 123.38
    assert client.submit(market(INFY, "SELL", 1, strategy_code="tick")).avg_price == 123.35


def test_gateway_checks_limit_prices_against_the_instruments_tick(
    client: ExecutionClient,
) -> None:
    publish(client, BANKBEES, 123.45)
    publish(client, INFY, 123.45)
    bees = client.submit(limit(BANKBEES, "BUY", 1, 123.47, strategy_code="tick"))
    # Marketable; slipped 123.52 capped at the limit 123.47.
    assert bees.status == OrderStatus.ORDER_STATUS_FILLED
    assert bees.avg_price == 123.47
    with pytest.raises(InvalidArgument) as info:
        client.submit(limit(INFY, "BUY", 1, 123.47, strategy_code="tick"))
    assert "intent.price" in info.value.details
    assert len(client.list_orders()) == 1
