"""A dry-run cancel answers as Kite would, as its ack does: the cancelled order's raw
says CANCELLED (with the simulator's kite_statuses, also its filled and pending
quantities, as a paper cancel), not the ack's OPEN."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.server.clock import ManualClock
from execgw.server.domain import OrderIntent, OrderStatus, OrderType, Product, Quote, Side, Validity
from execgw.server.replay import build_engine

if TYPE_CHECKING:
    from tests.conftest import make_config
    from tests.e2e_helpers import INFY
else:
    from conftest import make_config
    from e2e_helpers import INFY

D = Decimal


def _cancelled_raw(tmp_path: Path, clock: ManualClock, execution: dict[str, Any]) -> Any:
    config = make_config(
        tmp_path, mode="live", execution={"dry_run": True, "slippage_bps": 0.0, **execution}
    )
    engine = build_engine(config, clock)
    book = Quote(INFY, D("1000.0"), clock.now(), D("999.9"), D("1000.1"), 100, 30)
    engine.apply_quotes([book])
    # A DAY market BUY of 50 against 30 at the ask: 30 fill, 20 rest (with simulate).
    intent = OrderIntent(INFY, "s", Side.BUY, 50, OrderType.MARKET, Product.MIS, Validity.DAY)
    placed = engine.submit(intent, "o1")
    assert placed.status.is_open
    done = engine.cancel(placed.order_id)
    assert done.status is OrderStatus.CANCELLED
    return done.raw


def test_a_simulated_dry_run_cancel_carries_kites_status_as_paper_does(
    tmp_path: Path, clock: ManualClock
) -> None:
    execution = {
        "dry_run_fills": "simulate",
        "simulator": {"kite_statuses": True, "price_source": "touch", "cap_to_displayed_qty": True},
    }
    assert _cancelled_raw(tmp_path, clock, execution) == {
        "status": "CANCELLED",
        "filled_quantity": 30,
        "pending_quantity": 0,
        "dry_run": True,
    }


@pytest.mark.parametrize("fills", ["none", "simulate"])
def test_a_dry_run_cancel_says_cancelled_where_the_ack_said_open(
    tmp_path: Path, clock: ManualClock, fills: str
) -> None:
    capped = {"cap_to_displayed_qty": True, "price_source": "touch"}
    raw = _cancelled_raw(tmp_path, clock, {"dry_run_fills": fills, "simulator": capped})
    assert raw == {"status": "CANCELLED", "dry_run": True}
