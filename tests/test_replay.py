"""`execgw replay`: a day recorded by a real gateway (journal.record_quotes) re-run in
memory. The recording's own config reproduces its fills exactly; another config gives
other fills, the same ones every time; the CLI prints the difference."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.cli import main
from execgw.server.cli_replay import as_json
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.journal import Journal
from execgw.server.replay import ReplayError, compare

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S

RECORDED: dict[str, Any] = {
    "slippage_bps": 0.0,
    "simulator": {"price_source": "touch", "cap_to_displayed_qty": True},
}
OTHER: dict[str, Any] = {"slippage_bps": 10.0, "simulator": {"price_source": "ltp"}}


def book(ltp: float, bid: float, ask: float, qty: int) -> Quote:
    return Quote(symbol=INFY, ltp=ltp, bid=bid, ask=ask, bid_qty=qty, ask_qty=qty, volume=0)


def record_day(config: GatewayConfig, clock: ManualClock) -> None:
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            client.publish_quotes([book(1000.0, 999.9, 1000.1, 40)])
            client.submit(market(INFY, "BUY", 100, strategy_code="a"), "a1")
            clock.advance(timedelta(seconds=1))
            client.publish_quotes(
                [book(1000.5, 1000.4, 1000.6, 50), book(1001, 1000.9, 1001.1, 50)]
            )
            client.submit(market(INFY, "SELL", 60, strategy_code="a"), "a2")
            resting = client.submit(limit(INFY, "BUY", 10, 995.0, strategy_code="b"), "b1")
            client.submit(limit(INFY, "BUY", 10, 990.0, strategy_code="b"), "b2")
            clock.advance(timedelta(seconds=1))
            client.publish_quotes([book(994.5, 994.4, 994.6, 30)])
            client.cancel(client.list_orders(strategy_code="b")[-1].order_id)
            assert resting.order_id
            clock.advance(timedelta(seconds=1))
            client.publish_quotes([book(1002.0, 1001.9, 1002.1, 200)])
            client.submit(market(INFY, "SELL", 50, strategy_code="a"), "a3")
    finally:
        gateway.stop()


@pytest.fixture
def recorded(tmp_path: Path, clock: ManualClock) -> GatewayConfig:
    config = make_config(tmp_path, execution=RECORDED, journal={"record_quotes": True})
    record_day(config, clock)
    return config


def _compare(config: GatewayConfig, other: GatewayConfig) -> Any:
    journal = Journal(Path(config.journal.path), read_only=True)
    try:
        return compare(journal, other)
    finally:
        journal.close()


def test_the_same_config_reproduces_the_recorded_fills(recorded: GatewayConfig) -> None:
    result = _compare(recorded, recorded)
    assert result.recorded.orders  # a1, a2, a3, b1, b2
    assert len(result.recorded.orders) == 5
    assert result.replayed == result.recorded
    assert not any(result.differs(k) for k in result.order_keys())
    # Partial fills across quotes happened, so this is not trivially equal.
    a1 = result.recorded.orders[("a", "a1")]
    assert (a1.filled_qty, a1.status) == (100, "FILLED")
    assert result.recorded.orders[("b", "b2")].status == "CANCELLED"


def test_another_config_changes_fills_and_the_same_way_every_time(
    recorded: GatewayConfig, tmp_path: Path
) -> None:
    other = make_config(tmp_path, execution=OTHER)
    first = as_json(_compare(recorded, other))
    second = as_json(_compare(recorded, other))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    changed = {o["client_order_id"] for o in first["orders"] if o["changed"]}
    assert "a1" in changed  # LTP + 10 bps, all at once, instead of the ask in slices
    a1 = next(o for o in first["orders"] if o["client_order_id"] == "a1")
    assert a1["replayed"]["avg_price"] == "1001.00"
    assert a1["recorded"]["filled_qty"] == a1["replayed"]["filled_qty"] == 100
    rows = {s["strategy_code"]: s for s in first["strategies"]}
    assert rows["a"]["recorded"] != rows["a"]["replayed"]


def test_the_cli_prints_json_and_a_table(
    recorded: GatewayConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(make_config(tmp_path, execution=OTHER).model_dump()))
    journal = recorded.journal.path
    assert main(["replay", journal, "--config", str(other_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {o["client_order_id"] for o in data["orders"]} == {"a1", "a2", "a3", "b1", "b2"}
    assert main(["replay", journal, "--config", str(other_path)]) == 0
    out = capsys.readouterr().out
    assert "changed" in out
    assert "realized PnL by strategy" in out


def test_a_journal_without_recorded_quotes_cannot_be_replayed(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution=RECORDED)
    record_day(config, clock)
    with pytest.raises(ReplayError, match="record_quotes"):
        _compare(config, config)


SEEDED: dict[str, Any] = {
    "slippage_bps": 0.0,
    "simulator": {
        "price_source": "touch",
        "cap_to_displayed_qty": True,
        "touch_fill_probability": 0.5,
        "seed": 11,
        "latency_ms": {"insert": 200, "cancel": 100, "jitter": 900},
        "kite_statuses": True,
    },
}


def test_latency_and_queue_draws_replay_exactly_and_deterministically(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution=SEEDED, journal={"record_quotes": True})
    record_day(config, clock)
    same = _compare(config, config)
    assert same.replayed == same.recorded
    other = make_config(
        tmp_path, execution={**SEEDED, "simulator": {**SEEDED["simulator"], "seed": 12}}
    )
    runs = [json.dumps(as_json(_compare(config, other)), sort_keys=True) for _ in range(2)]
    assert runs[0] == runs[1]


def test_fill_latency_replays_exactly_and_deterministically(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Fill reports 300 ms (+ jitter) after the exchange made them: the recording's own
    config gives the same reported fills again, another seed the same ones twice."""
    latency = {"insert": 200, "cancel": 100, "fill": 300, "jitter": 900}
    seeded = {**SEEDED, "simulator": {**SEEDED["simulator"], "latency_ms": latency}}
    config = make_config(tmp_path, execution=seeded, journal={"record_quotes": True})
    record_day(config, clock)
    same = _compare(config, config)
    assert same.replayed == same.recorded
    # Fills were reported during the day (the last ones may still have been on their way).
    assert sum(o.filled_qty for o in same.recorded.orders.values()) > 0
    other = make_config(
        tmp_path, execution={**seeded, "simulator": {**seeded["simulator"], "seed": 12}}
    )
    runs = [json.dumps(as_json(_compare(config, other)), sort_keys=True) for _ in range(2)]
    assert runs[0] == runs[1]
