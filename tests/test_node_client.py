"""examples/node/client.js (grpc-js + proto-loader, nothing but the .proto files) trades
against a real gateway, and what it prints is exactly what the contract promises.

The gateway takes quotes only from PublishQuotes and runs on a ManualClock, so every
price, sequence number and status below is fixed. The script checks the stream's
resume for gaps itself; here we check what it saw.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.v1 import gateway_pb2, gateway_pb2_grpc, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
else:
    from conftest import RunningGateway

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "node" / "client.js"
NODE = shutil.which("node")
STATUS_DETAILS_KEY = "grpc-status-details-bin"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on PATH (CI has it)")


def _run_node(target: str) -> list[dict[str, Any]]:
    assert NODE is not None
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules has no @grpc/grpc-js: run `make node_modules/.installed`")
    run = subprocess.run(
        [NODE, str(SCRIPT), target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return [json.loads(line) for line in run.stdout.splitlines()]


def _only(line: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The line's step and `keys`; every exact `*_decimal` string it carries must equal
    its double (a gateway may add such fields; where it does they must agree)."""
    for key, value in line.items():
        base = key.removesuffix("_decimal")
        if key != base and line.get(base) is not None:
            assert Decimal(value) == Decimal(repr(line[base])), (key, line)
    return {"step": line["step"], **{k: line[k] for k in keys}}


RESULT_KEYS = (
    "order_id",
    "client_order_id",
    "status",
    "order_type",
    "side",
    "qty",
    "filled_qty",
    "avg_price",
    "price",
    "reject_reason",
    "message",
)


def _python_invalid_argument(target: str) -> grpc.Call:
    """The same malformed submit as the script's step 9, from Python's generated stubs."""
    with grpc.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        intent = orders_pb2.OrderIntent(
            symbol="NSE:INFY",
            strategy_code="node",
            side=orders_pb2.SIDE_BUY,
            qty=0,
            order_type=orders_pb2.ORDER_TYPE_MARKET,
            product=orders_pb2.PRODUCT_MIS,
            validity=orders_pb2.VALIDITY_DAY,
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.SubmitOrder(
                gateway_pb2.SubmitOrderRequest(intent=intent, client_order_id="node-bad-1"),
                timeout=10,
            )
    error = raised.value
    assert isinstance(error, grpc.Call)  # a failed unary call is both
    return error


def test_node_client_trades_streams_resumes_and_reads_errors(gateway: RunningGateway) -> None:
    lines = _run_node(gateway.target)
    steps = [line["step"] for line in lines]
    assert steps == [
        "ready",
        "publish",
        "stream_live",
        "submit_market",
        "event",
        "event",
        "stream_closed",
        "retry_market",
        "submit_limit",
        "cancel",
        "position",
        "event",
        "event",
        "resumed",
        "invalid_argument",
        "done",
    ], lines
    by_step = iter(lines)
    assert next(by_step) == {"step": "ready", "target": gateway.target}
    assert next(by_step) == {"step": "publish", "accepted": 1, "refused_count": 0}
    # Starting the day took sequences 1 and 2 (its rollover and equity peak); the stream
    # went live after replaying them.
    assert next(by_step) == {"step": "stream_live", "head_sequence": 2}

    market = {
        "order_id": "O0000000001",
        "client_order_id": "node-mkt-1",
        "order_type": "ORDER_TYPE_MARKET",
        "side": "SIDE_BUY",
        "qty": 10,
        "price": None,
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "message": "",
    }
    # 1500 + 5 bps = 1500.75, on the 0.05 tick.
    filled = {**market, "status": "ORDER_STATUS_FILLED", "filled_qty": 10, "avg_price": 1500.75}
    assert _only(next(by_step), *RESULT_KEYS) == {"step": "submit_market", **filled}

    fill_keys = ("stream", "sequence", "filtered", "kind", "order_id", "client_order_id")
    assert _only(next(by_step), *fill_keys, "status", "filled_qty") == {
        "step": "event",
        "stream": 1,
        "sequence": 3,
        "filtered": 2,  # the day's rollover and peak: not fills or order updates
        "kind": "order_update",
        "order_id": "O0000000001",
        "client_order_id": "node-mkt-1",
        "status": "ORDER_STATUS_PLACED",
        "filled_qty": 0,
    }
    assert _only(
        next(by_step), *fill_keys, "side", "qty", "price", "order_status", "order_filled_qty"
    ) == {
        "step": "event",
        "stream": 1,
        "sequence": 4,
        "filtered": 0,
        "kind": "fill",
        "order_id": "O0000000001",
        "client_order_id": "node-mkt-1",
        "side": "SIDE_BUY",
        "qty": 10,
        "price": 1500.75,
        "order_status": "ORDER_STATUS_FILLED",
        "order_filled_qty": 10,
    }
    assert next(by_step) == {"step": "stream_closed", "last_sequence": 4}
    # The retry returned the same order; no sequence was used (the resume starts at 5).
    assert _only(next(by_step), *RESULT_KEYS) == {"step": "retry_market", **filled}

    limit = {
        "order_id": "O0000000002",
        "client_order_id": "node-lmt-1",
        "order_type": "ORDER_TYPE_LIMIT",
        "side": "SIDE_SELL",
        "qty": 10,
        "filled_qty": 0,
        "avg_price": None,
        "price": 1510,
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
    }
    assert _only(next(by_step), *RESULT_KEYS) == {
        "step": "submit_limit",
        **limit,
        "status": "ORDER_STATUS_PLACED",
        "message": "",
    }
    assert _only(next(by_step), *RESULT_KEYS) == {
        "step": "cancel",
        **limit,
        "status": "ORDER_STATUS_CANCELLED",
        "message": "cancelled by client",
    }
    position = next(by_step)
    assert _only(
        position,
        "strategy_code",
        "symbol",
        "product",
        "net_qty",
        "avg_price",
        "realized_pnl",
        "unrealized_pnl",
        "last_price",
    ) == {
        "step": "position",
        "strategy_code": "node",
        "symbol": "NSE:INFY",
        "product": "PRODUCT_MIS",
        "net_qty": 10,
        "avg_price": 1500.75,
        "realized_pnl": 0,
        "unrealized_pnl": -7.5,  # (1500 - 1500.75) x 10
        "last_price": 1500,
    }
    assert position["realized_pnl_decimal"] == "0"
    assert position["unrealized_pnl_decimal"] == "-7.50"

    update_keys = (*fill_keys, "status", "filled_qty")
    common = {"step": "event", "stream": 2, "filtered": 0, "kind": "order_update"}
    common |= {"order_id": "O0000000002", "client_order_id": "node-lmt-1", "filled_qty": 0}
    assert _only(next(by_step), *update_keys) == {
        **common,
        "sequence": 5,
        "status": "ORDER_STATUS_PLACED",
    }
    assert _only(next(by_step), *update_keys) == {
        **common,
        "sequence": 6,
        "status": "ORDER_STATUS_CANCELLED",
    }
    assert next(by_step) == {
        "step": "resumed",
        "from_sequence": 5,
        "first_sequence": 5,
        "gap_free": True,
    }

    invalid = next(by_step)
    assert invalid["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert invalid["code_name"] == "INVALID_ARGUMENT"
    assert invalid["details"].startswith("intent.qty: "), invalid
    # What Node read is what the server sent: the same text, and the same status-details
    # trailer byte for byte: a google.rpc.BadRequest naming intent.qty.
    from_python = _python_invalid_argument(gateway.target)
    assert invalid["details"] == from_python.details()
    trailers = from_python.trailing_metadata() or ()
    sent = next((value for key, value in trailers if key == STATUS_DETAILS_KEY), None)
    assert sent is not None, "the gateway sends google.rpc.BadRequest with INVALID_ARGUMENT"
    rich = invalid["rich"]
    assert base64.b64decode(rich["trailer_base64"]) == sent
    assert rich["status_code"] == invalid["code"]
    assert rich["status_message"] == invalid["details"]
    assert "intent.qty" in [v["field"] for v in rich["violations"]], rich
    assert next(by_step) == {"step": "done"}
