"""examples/go (protoc-gen-go + protoc-gen-go-grpc stubs, nothing else from this repo)
builds and trades against a real gateway, where a Go toolchain can build it offline.

CI does not need Go: without the tools, or without Debian's Go libraries (the build
would have to download them), the test skips. examples/go/README.md says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
else:
    from conftest import RunningGateway

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "examples" / "go" / "build.sh"
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
DEBIAN_GO_LIBRARIES = Path("/usr/share/gocode/src/google.golang.org/grpc")

_missing = [tool for tool in TOOLS if shutil.which(tool) is None]
if not DEBIAN_GO_LIBRARIES.is_dir():
    _missing.append(f"{DEBIAN_GO_LIBRARIES} (golang-google-grpc-dev)")
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"no offline Go build here; missing: {', '.join(_missing)}"
)


@pytest.mark.timeout(300)  # a first build compiles grpc-go: tens of seconds on a busy machine
def test_go_example_builds_and_trades(gateway: RunningGateway, tmp_path: Path) -> None:
    env = {**os.environ, "EXECGW_GO_OUT": str(tmp_path), "EXECGW_GO_MODE": "gopath"}
    build = subprocess.run(
        ["sh", str(BUILD)], capture_output=True, text=True, timeout=280, check=False, env=env
    )
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(
        [str(tmp_path / "execgw-go"), gateway.target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    market = {"order_id": "O0000000001", "client_order_id": "go-mkt-1", "qty": 10}
    resting = {"order_id": "O0000000002", "client_order_id": "go-lmt-1", "qty": 10}
    resting |= {"filled_qty": 0, "avg_price": None, "price": 1510}
    assert lines[:-2] == [
        {"step": "ready", "target": gateway.target},
        {"step": "publish", "accepted": 1, "refused_count": 0},
        {"step": "stream_live", "head_sequence": 2},
        {
            "step": "submit_market",
            **market,
            "status": "ORDER_STATUS_FILLED",
            "filled_qty": 10,
            "avg_price": 1500.75,  # 1500 + 5 bps, on the 0.05 tick
            "price": None,
        },
        {
            "step": "event",
            "stream": 1,
            "sequence": 3,
            "filtered": 2,
            "kind": "order_update",
            "order_id": "O0000000001",
            "status": "ORDER_STATUS_PLACED",
        },
        {
            "step": "event",
            "stream": 1,
            "sequence": 4,
            "filtered": 0,
            "kind": "fill",
            "order_id": "O0000000001",
            "qty": 10,
            "price": 1500.75,
            "order_status": "ORDER_STATUS_FILLED",
        },
        {"step": "stream_closed", "last_sequence": 4},
        {"step": "submit_limit", **resting, "status": "ORDER_STATUS_PLACED"},
        {"step": "cancel", **resting, "status": "ORDER_STATUS_CANCELLED"},
        {
            "step": "position",
            "symbol": "NSE:INFY",
            "net_qty": 10,
            "avg_price": 1500.75,
            "unrealized_pnl_decimal": "-7.50",
        },
        {
            "step": "event",
            "stream": 2,
            "sequence": 5,
            "filtered": 0,
            "kind": "order_update",
            "order_id": "O0000000002",
            "status": "ORDER_STATUS_PLACED",
        },
        {
            "step": "event",
            "stream": 2,
            "sequence": 6,
            "filtered": 0,
            "kind": "order_update",
            "order_id": "O0000000002",
            "status": "ORDER_STATUS_CANCELLED",
        },
        {"step": "resumed", "from_sequence": 5, "gap_free": True},
    ]
    invalid, done = lines[-2:]
    assert (invalid["step"], invalid["code"]) == ("invalid_argument", "InvalidArgument")
    assert invalid["message"].startswith("intent.qty: ")
    # The gateway sends google.rpc.BadRequest: qty is one of its field violations.
    assert invalid["details"], invalid
    assert "intent.qty" in [v["field"] for v in invalid["violations"]], invalid
    assert done == {"step": "done"}
