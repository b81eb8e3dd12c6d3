"""Indian charges per fill, from the default rate table, checked to the paisa by hand.

Rates (config.py, Zerodha NSE from 2024-10-01): SEBI Rs 10 a crore (0.0001%), GST
18% of brokerage + exchange txn + SEBI; every part rounded to the paisa, half up.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, limit, market
from execgw.server.clock import ManualClock
from execgw.server.config import (
    ChargesConfig,
    ChargeSegment,
    ConfigError,
    SegmentChargesConfig,
    parse_config,
)
from execgw.server.domain import Charges, Product, Side
from execgw.server.venues.charges import ChargeModel, segment_of
from execgw.server.venues.factory import charge_model

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

D = Decimal


@pytest.fixture
def model() -> ChargeModel:
    built = charge_model(ChargesConfig(enabled=True))
    assert built is not None
    return built


def parts(c: Charges | None) -> tuple[str, ...]:
    assert c is not None
    return tuple(
        str(v) for v in (c.brokerage, c.stt, c.exchange_txn, c.sebi, c.stamp_duty, c.gst, c.total)
    )


def test_cnc_round_trip(model: ChargeModel) -> None:
    # BUY 100 @ 1500 = 150,000: brokerage 0; STT 0.1% = 150.00; txn 0.00297% = 4.455
    # -> 4.46; SEBI 0.15; stamp 0.015% = 22.50; GST 18% x 4.61 = 0.8298 -> 0.83.
    buy = model.for_fill(INFY, Product.CNC, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
    assert parts(buy) == ("0.00", "150.00", "4.46", "0.15", "22.50", "0.83", "177.94")
    # SELL 100 @ 1600 = 160,000: STT 160.00; txn 4.752 -> 4.75; SEBI 0.16; no stamp;
    # GST 18% x 4.91 = 0.8838 -> 0.88.
    sell = model.for_fill(INFY, Product.CNC, Side.SELL, 100, D(1600), brokerage_so_far=D(0))
    assert parts(sell) == ("0.00", "160.00", "4.75", "0.16", "0.00", "0.88", "165.79")


def test_mis_round_trip(model: ChargeModel) -> None:
    # BUY 100 @ 1500: 0.03% = 45 -> capped at Rs 20; no STT on an intraday buy; txn 4.46;
    # SEBI 0.15; stamp 0.003% = 4.50; GST 18% x 24.61 = 4.4298 -> 4.43.
    buy = model.for_fill(INFY, Product.MIS, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
    assert parts(buy) == ("20.00", "0.00", "4.46", "0.15", "4.50", "4.43", "33.54")
    # SELL 100 @ 1510 = 151,000: brokerage 20; STT 0.025% = 37.75; txn 4.4847 -> 4.48;
    # SEBI 0.151 -> 0.15; GST 18% x 24.63 = 4.4334 -> 4.43.
    sell = model.for_fill(INFY, Product.MIS, Side.SELL, 100, D(1510), brokerage_so_far=D(0))
    assert parts(sell) == ("20.00", "37.75", "4.48", "0.15", "0.00", "4.43", "66.81")


def test_small_mis_brokerage_is_the_percentage_below_the_cap(model: ChargeModel) -> None:
    # 10 @ 1000 = 10,000: 0.03% = 3.00; txn 0.297 -> 0.30; SEBI 0.01; stamp 0.30;
    # GST 18% x 3.31 = 0.5958 -> 0.60.
    c = model.for_fill(INFY, Product.MIS, Side.BUY, 10, D(1000), brokerage_so_far=D(0))
    assert parts(c) == ("3.00", "0.00", "0.30", "0.01", "0.30", "0.60", "4.21")


def test_brokerage_cap_is_per_order_across_its_fills(model: ChargeModel) -> None:
    # 60 @ 1500 = 90,000: 27 -> 20. Then 40 @ 1500: 18, but the order has paid its 20.
    first = model.for_fill(INFY, Product.MIS, Side.BUY, 60, D(1500), brokerage_so_far=D(0))
    assert first is not None
    assert first.brokerage == D("20.00")
    second = model.for_fill(INFY, Product.MIS, Side.BUY, 40, D(1500), brokerage_so_far=D(20))
    assert second is not None
    assert second.brokerage == D("0.00")


def test_option_sell_pays_flat_brokerage_and_stt_on_the_premium(model: ChargeModel) -> None:
    # 75 @ 100 = 7,500 premium: Rs 20 flat; STT 0.1% = 7.50; txn 0.03503% = 2.62725
    # -> 2.63; SEBI 0.0075 -> 0.01; GST 18% x 22.64 = 4.0752 -> 4.08.
    symbol = "NFO:NIFTY26DEC24000CE"
    c = model.for_fill(symbol, Product.NRML, Side.SELL, 75, D(100), brokerage_so_far=D(0))
    assert parts(c) == ("20.00", "7.50", "2.63", "0.01", "0.00", "4.08", "34.22")
    again = model.for_fill(symbol, Product.NRML, Side.SELL, 75, D(100), brokerage_so_far=D(20))
    assert again is not None
    assert again.brokerage == D(0)


def test_future_buy(model: ChargeModel) -> None:
    # 50 @ 24,000 = 12,00,000: 0.03% = 360 -> 20; txn 0.00173% = 20.76; SEBI 1.20;
    # stamp 0.002% = 24.00; GST 18% x 41.96 = 7.5528 -> 7.55.
    c = model.for_fill(
        "NFO:NIFTY26DECFUT", Product.NRML, Side.BUY, 50, D(24000), brokerage_so_far=D(0)
    )
    assert parts(c) == ("20.00", "0.00", "20.76", "1.20", "24.00", "7.55", "73.51")


def test_bse_cnc_round_trip_pays_bse_transaction_charges(model: ChargeModel) -> None:
    # BSE rows (Zerodha, BSE column, from 2024-10-01): transaction charges 0.00375%.
    # BUY 100 @ 1500 = 150,000: brokerage 0; STT 0.1% = 150.00; txn 0.00375% = 5.625
    # -> 5.63; SEBI 0.15; stamp 0.015% = 22.50; GST 18% x 5.78 = 1.0404 -> 1.04.
    buy = model.for_fill("BSE:INFY", Product.CNC, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
    assert parts(buy) == ("0.00", "150.00", "5.63", "0.15", "22.50", "1.04", "179.32")
    # SELL 100 @ 1600 = 160,000: STT 160.00; txn 6.00; SEBI 0.16; no stamp;
    # GST 18% x 6.16 = 1.1088 -> 1.11. The round trip: 179.32 + 167.27 = 346.59 (NSE:
    # 177.94 + 165.79 = 343.73).
    sell = model.for_fill("BSE:INFY", Product.CNC, Side.SELL, 100, D(1600), brokerage_so_far=D(0))
    assert parts(sell) == ("0.00", "160.00", "6.00", "0.16", "0.00", "1.11", "167.27")


def test_bfo_option_and_future_pay_bse_derivative_charges(model: ChargeModel) -> None:
    # SELL 20 SENSEX CE @ 250 = 5,000 premium: flat 20; STT 0.1% = 5.00; txn 0.0325% =
    # 1.625 -> 1.63; SEBI 0.005 -> 0.01; GST 18% x 21.64 = 3.8952 -> 3.90.
    option = model.for_fill(
        "BFO:SENSEX26DEC80000CE", Product.NRML, Side.SELL, 20, D(250), brokerage_so_far=D(0)
    )
    assert parts(option) == ("20.00", "5.00", "1.63", "0.01", "0.00", "3.90", "30.54")
    # BUY 10 SENSEX FUT @ 80,000 = 8,00,000: 0.03% = 240 -> 20; no transaction charge
    # on BSE futures; SEBI 0.80; stamp 0.002% = 16.00; GST 18% x 20.80 = 3.744 -> 3.74.
    future = model.for_fill(
        "BFO:SENSEX26DECFUT", Product.NRML, Side.BUY, 10, D(80000), brokerage_so_far=D(0)
    )
    assert parts(future) == ("20.00", "0.00", "0.00", "0.80", "16.00", "3.74", "40.54")


def test_a_python_row_gives_bse_its_brokerage_but_not_its_exchange_charges() -> None:
    # A row built in Python is whole: its brokerage (0.03% or Rs 20) is stated.
    delivery = (
        ChargesConfig()
        .segments["equity_delivery"]
        .model_copy(update={"brokerage_pct": 0.03, "brokerage_max_rupees": 20.0})
    )
    built = charge_model(ChargesConfig(enabled=True, segments={"equity_delivery": delivery}))
    assert built is not None
    bse = built.for_fill("BSE:INFY", Product.CNC, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
    # As test_bse_cnc_round_trip's buy (BSE's txn 0.00375% = 5.63, not NSE's 4.46), with
    # brokerage 0.03% of 150,000 = 45 -> 20: GST 18% x 25.78 = 4.6404 -> 4.64.
    assert parts(bse) == ("20.00", "150.00", "5.63", "0.15", "22.50", "4.64", "202.92")


def test_a_partial_table_keeps_the_default_rows_it_leaves_out(model: ChargeModel) -> None:
    config = parse_config(
        {
            "execution": {
                "charges": {
                    "enabled": True,
                    "segments": {
                        "equity_intraday": {"brokerage_pct": 0.0, "stt_sell_pct": 0.025},
                    },
                }
            }
        },
        source="test",
    )
    built = charge_model(config.execution.charges)
    assert built is not None
    # The given row over its default: no brokerage, the default's stamp duty (0.003%).
    mis = built.for_fill("NSE:INFY", Product.MIS, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
    assert mis is not None
    assert (mis.brokerage, mis.stamp_duty) == (D("0.00"), D("4.50"))
    # CNC and NFO rows were left out: the defaults, not None (no charges at all).
    for symbol, product, qty, price in (
        ("NSE:INFY", Product.CNC, 100, D(1500)),
        ("NFO:NIFTY24DECFUT", Product.NRML, 75, D(24000)),
        ("BFO:SENSEX26DECFUT", Product.NRML, 10, D(80000)),
    ):
        args = (symbol, product, Side.BUY, qty, price)
        assert built.for_fill(*args, brokerage_so_far=D(0)) == model.for_fill(
            *args, brokerage_so_far=D(0)
        )
    # BSE intraday was left out: its own row (BSE's txn 0.00375% of 150,000 = 5.63,
    # NSE's is 4.46), with the brokerage given on its NSE row (none).
    bse = built.for_fill("BSE:INFY", Product.MIS, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
    assert bse is not None
    assert (bse.brokerage, bse.exchange_txn, bse.stamp_duty) == (D("0.00"), D("5.63"), D("4.50"))


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"brokerage_pct": 0.03, "stt_sell_pct": 0.1}, "the cap per executed order"),
        ({"brokerage_pct": None}, "the flat fee per executed order"),
    ],
)
def test_a_row_with_brokerage_but_no_cap_or_fee_is_refused(row: dict[str, Any], words: str) -> None:
    # CNC's default row charges no brokerage: its cap of 0 would make brokerage 0.00 on
    # every fill, so a rate given over it needs a cap (or fee) of its own.
    data = {"execution": {"charges": {"enabled": True, "segments": {"equity_delivery": row}}}}
    with pytest.raises(ConfigError) as refused:
        parse_config(data, source="test")
    message = str(refused.value)
    assert "execution.charges.segments.equity_delivery" in message
    assert "brokerage_max_rupees is required" in message
    assert words in message


def test_a_row_states_its_brokerage_with_a_cap_or_none() -> None:
    segments = {
        "equity_intraday": {"brokerage_pct": 0.03, "brokerage_max_rupees": 20.0},
        "equity_delivery": {"brokerage_pct": 0.0},
        "options": {"brokerage_max_rupees": 20.0},
    }
    data = {"execution": {"charges": {"enabled": True, "segments": segments}}}
    rows = parse_config(data, source="test").execution.charges.segments
    assert rows["equity_intraday"].brokerage_max_rupees == 20.0
    assert rows["equity_delivery"].brokerage_max_rupees == 0.0


def test_segments_are_told_from_the_symbol() -> None:
    assert segment_of("NSE:INFY", Product.CNC) == "equity_delivery"
    assert segment_of("BSE:INFY", Product.MIS) == "bse_equity_intraday"
    assert segment_of("BSE:INFY", Product.CNC) == "bse_equity_delivery"
    assert segment_of("NFO:BANKNIFTY26DECFUT", Product.MIS) == "futures"
    assert segment_of("BFO:SENSEX26DECFUT", Product.NRML) == "bfo_futures"
    assert segment_of("BFO:SENSEX26DEC80000PE", Product.NRML) == "bfo_options"
    assert segment_of("MCX:CRUDEOIL26DECFUT", Product.NRML) is None


def test_disabled_charges_build_no_model() -> None:
    assert charge_model(ChargesConfig()) is None


# -- end to end ---------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path, clock: ManualClock) -> Iterator[ExecutionClient]:
    config = make_config(tmp_path, execution={"slippage_bps": 0.0, "charges": {"enabled": True}})
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
            yield c
    finally:
        gateway.stop()


def test_a_mis_round_trip_reports_charges_per_fill_and_pnl_gross_and_net(
    client: ExecutionClient,
) -> None:
    publish(client, INFY, 1500.00)
    buy = client.submit(market(INFY, "BUY", 100, strategy_code="s"))
    assert buy.charges_decimal == "33.54"
    publish(client, INFY, 1510.00)
    sell = client.submit(limit(INFY, "SELL", 100, 1510.00, strategy_code="s"))
    assert sell.charges_decimal == "66.81"
    [position] = client.positions(strategy_code="s")
    # Gross 100 x (1510 - 1500) = 1000; charges 33.54 + 66.81 = 100.35.
    assert position.realized_pnl_decimal == "1000.00"
    assert position.charges_decimal == "100.35"
    assert position.realized_pnl_net_decimal == "899.65"
    assert position.realized_pnl_net == pytest.approx(899.65)
    fills = []
    for event in client.stream_fills(from_sequence=1, reconnect=False, heartbeats=True):
        if event.WhichOneof("payload") == "heartbeat":
            break
        if event.WhichOneof("payload") == "fill":
            fills.append(event.fill)
    assert [(f.charges.total_decimal, f.charges.stt_decimal) for f in fills] == [
        ("33.54", "0.00"),
        ("66.81", "37.75"),
    ]


def test_without_charges_nothing_is_charged(tmp_path: Path, clock: ManualClock) -> None:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.00)
            result = client.submit(market(INFY, "BUY", 10, strategy_code="s"))
            assert result.charges_decimal == "0"
            [position] = client.positions(strategy_code="s")
            assert position.charges_decimal == "0"
            assert position.realized_pnl_net_decimal == position.realized_pnl_decimal
    finally:
        gateway.stop()


def _charges(segments: dict[str, Any]) -> ChargesConfig:
    """execution.charges, on, with these segments rows, as a config file gives them."""
    data = {"execution": {"charges": {"enabled": True, "segments": segments}}}
    return parse_config(data, source="test").execution.charges


def _rows(segments: dict[str, Any]) -> dict[ChargeSegment, SegmentChargesConfig]:
    return _charges(segments).segments


def test_a_row_given_in_part_keeps_its_default_rates() -> None:
    defaults = ChargesConfig().segments
    rows = _rows(
        {
            "equity_intraday": {"brokerage_pct": 0.01, "brokerage_max_rupees": 20},
            "options": {"stt_sell_pct": 0.15},
            "bfo_options": {"exchange_txn_pct": 0.005},
        }
    )
    # Only what was given changes; STT, exchange charges and stamp duty stay.
    assert rows["equity_intraday"] == defaults["equity_intraday"].model_copy(
        update={"brokerage_pct": 0.01}
    )
    # The default's brokerage counts as stated: options keep their flat Rs 20.
    assert rows["options"] == defaults["options"].model_copy(update={"stt_sell_pct": 0.15})
    # A bse_/bfo_ row given in part is merged over its own default row.
    assert rows["bfo_options"] == defaults["bfo_options"].model_copy(
        update={"exchange_txn_pct": 0.005}
    )


def test_a_new_brokerage_rate_keeps_the_default_cap() -> None:
    rows = _rows({"equity_intraday": {"brokerage_pct": 0.05}})
    assert (
        rows["equity_intraday"].brokerage_pct,
        rows["equity_intraday"].brokerage_max_rupees,
    ) == (
        0.05,
        20.0,
    )
    assert rows["equity_intraday"].stt_sell_pct == 0.025


def test_a_misspelt_rate_in_a_partial_row_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="did you mean 'brokerage_max_rupees'"):
        _rows({"equity_intraday": {"brokerage_pct": 0.03, "brokerage_max_rupes": 20}})


def test_a_partial_row_charges_the_default_levies(model: ChargeModel) -> None:
    built = charge_model(_charges({"equity_intraday": {"brokerage_pct": 0.0}}))
    assert built is not None
    args = ("NSE:INFY", Product.MIS, Side.SELL, 100, D(1500))
    given, default = (
        built.for_fill(*args, brokerage_so_far=D(0)),
        model.for_fill(*args, brokerage_so_far=D(0)),
    )
    assert given is not None
    assert default is not None
    assert given.brokerage == D("0.00") < default.brokerage
    # STT 0.025% of 150,000 on the sell, as the default row charges.
    assert given.stt == default.stt == D("37.50")
    assert given.exchange_txn == default.exchange_txn


def test_nse_brokerage_leaves_the_bse_exchange_charges_alone(model: ChargeModel) -> None:
    # Restating the futures cap must not move BFO futures to NSE's transaction rate.
    built = charge_model(
        ChargesConfig.model_validate(
            {"enabled": True, "segments": {"futures": {"brokerage_max_rupees": 20}}}
        )
    )
    assert built is not None
    args = ("BFO:SENSEX26DECFUT", Product.NRML, Side.BUY, 10, D(80000))
    future = built.for_fill(*args, brokerage_so_far=D(0))
    # As test_bfo_option_and_future_pay_bse_derivative_charges: no transaction charge.
    assert future == model.for_fill(*args, brokerage_so_far=D(0))
    assert parts(future) == ("20.00", "0.00", "0.00", "0.80", "16.00", "3.74", "40.54")


def test_nse_brokerage_applies_to_bse_rows_unless_they_give_their_own() -> None:
    defaults = ChargesConfig().segments
    rows = _rows(
        {
            "equity_intraday": {"brokerage_pct": 0.01},
            "options": {"brokerage_max_rupees": 10},
            "bfo_options": {"exchange_txn_pct": 0.005},
            "futures": {"brokerage_pct": 0.02, "brokerage_max_rupees": 15},
            "bfo_futures": {"brokerage_max_rupees": 25},
        }
    )
    # Left out: its own default row, with the NSE row's brokerage.
    assert rows["bse_equity_intraday"] == defaults["bse_equity_intraday"].model_copy(
        update={"brokerage_pct": 0.01}
    )
    # Given without brokerage: its own rates over its default, the NSE row's brokerage.
    assert rows["bfo_options"] == defaults["bfo_options"].model_copy(
        update={"exchange_txn_pct": 0.005, "brokerage_max_rupees": 10.0}
    )
    # Given with brokerage (either field): its own over its default, none of the NSE
    # row's: the two fields go together.
    assert rows["bfo_futures"] == defaults["bfo_futures"].model_copy(
        update={"brokerage_max_rupees": 25.0}
    )
    # An NSE row given without brokerage leaves its BSE row the default.
    assert _rows({"options": {"stt_sell_pct": 0.15}})["bfo_options"] == defaults["bfo_options"]


def test_a_fee_alone_over_no_default_brokerage_is_a_flat_fee() -> None:
    # CNC charges no brokerage: a cap alone there is the flat fee per executed order,
    # not a cap on the default's 0% (which would charge nothing).
    rows = _rows({"equity_delivery": {"brokerage_max_rupees": 20}})
    for name in ("equity_delivery", "bse_equity_delivery"):
        assert (rows[name].brokerage_pct, rows[name].brokerage_max_rupees) == (None, 20.0)
        assert rows[name].stt_buy_pct == 0.1
    built = charge_model(_charges({"equity_delivery": {"brokerage_max_rupees": 20}}))
    assert built is not None
    for symbol in ("NSE:INFY", "BSE:INFY"):
        buy = built.for_fill(symbol, Product.CNC, Side.BUY, 100, D(1500), brokerage_so_far=D(0))
        assert buy is not None
        assert buy.brokerage == D("20.00")


def test_a_bse_row_stating_a_fee_keeps_it_whatever_its_nse_row_charges() -> None:
    """A fee alone on a bse_/bfo_ row means what it means on its own row, never a cap on
    the NSE row's rate (from review)."""
    rows = _rows(
        {
            "options": {"brokerage_pct": 0.05, "brokerage_max_rupees": 40},
            "bfo_options": {"brokerage_max_rupees": 20},
            "equity_delivery": {"brokerage_pct": 0.03, "brokerage_max_rupees": 20},
            "bse_equity_delivery": {"brokerage_max_rupees": 20},
        }
    )
    assert (rows["bfo_options"].brokerage_pct, rows["bfo_options"].brokerage_max_rupees) == (
        None,
        20.0,
    )
    delivery = rows["bse_equity_delivery"]
    assert (delivery.brokerage_pct, delivery.brokerage_max_rupees) == (None, 20.0)
    assert (rows["options"].brokerage_pct, rows["options"].brokerage_max_rupees) == (0.05, 40.0)


def test_a_mistake_in_an_nse_row_is_reported_once_against_that_row() -> None:
    data = {
        "execution": {
            "charges": {"enabled": True, "segments": {"equity_delivery": {"brokerage_pct": 0.03}}}
        }
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(data, source="x.yaml")
    message = str(refused.value)
    assert "segments.equity_delivery" in message
    assert "bse_equity_delivery" not in message
