"""examples/stubs_only.py trades with stubs protoc generates from proto/ right now, and
with `execgw.client` made unimportable: the contract alone is enough to trade."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
    from tests.contract_helpers import BLOCK_HELPER_LIBRARY, generate_stubs, python_with_stubs
else:
    from conftest import RunningGateway
    from contract_helpers import BLOCK_HELPER_LIBRARY, generate_stubs, python_with_stubs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "stubs_only.py"

RUNNER = (
    BLOCK_HELPER_LIBRARY
    + """
import runpy
stubs, example, target = sys.argv[1:4]
sys.argv = [example, target]
runpy.run_path(example, run_name="__main__")
import execgw.v1.gateway_pb2 as used
assert used.__file__.startswith(stubs), used.__file__
assert sys.modules["execgw.client"] is None
"""
)


def test_stubs_only_example_trades_without_the_client_library(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    stubs = generate_stubs(tmp_path / "stubs")
    run = python_with_stubs(stubs, "-c", RUNNER, str(stubs), str(EXAMPLE), gateway.target)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    filled = {
        "order_id": "O0000000001",
        "client_order_id": "stubs-1",
        "status": "ORDER_STATUS_FILLED",
        "filled_qty": 10,
        "avg_price": 1500.75,  # 1500 + 5 bps, on the tick
    }
    assert lines == [
        {"step": "quote", "accepted": 1, "refused_count": 0},
        {"step": "stream_live", "head_sequence": 2},
        {"step": "submit", **filled},
        {
            "step": "fill",
            "sequence": 4,
            "order_id": "O0000000001",
            "side": "SIDE_BUY",
            "qty": 10,
            "price": 1500.75,
            "order": filled,
        },
        {
            "step": "position",
            "symbol": "NSE:INFY",
            "net_qty": 10,
            "avg_price": 1500.75,
            "unrealized_pnl": "-7.50",
        },
    ]
