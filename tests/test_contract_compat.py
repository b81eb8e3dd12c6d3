"""Compatibility both ways across contract versions, with stubs generated at test time.

- A client built from the previous release (proto/releases/v1.0.binpb, before exact
  money and language options) trades against the current gateway, and the current
  client trades against a gateway built from it.
- A newer peer, built from a made-up later contract (contract_helpers.future_image: a new
  OrderStatus 99, new fields, a new stream payload), talks to the current gateway and to
  the current client. Nothing crashes, nothing is misread: an unknown status stays a
  number, unknown fields are kept aside, an event of an unknown kind still moves the
  stream's position, and a value the gateway does not know is refused.

The other side always runs in its own interpreter (compat_peer.py), since two
generations of the same .proto files cannot share one.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf import descriptor_pb2, unknown_fields
from google.protobuf.message import Message

from execgw.client import ExecutionClient, limit, market, result_to_legacy
from execgw.v1 import market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
    from tests.contract_helpers import (
        FUTURE_FIELD,
        FUTURE_STATUS,
        RELEASED_IMAGE,
        future_image,
        generate_stubs,
        popen_python_with_stubs,
        python_with_stubs,
    )
else:
    from conftest import RunningGateway
    from contract_helpers import (
        FUTURE_FIELD,
        FUTURE_STATUS,
        RELEASED_IMAGE,
        future_image,
        generate_stubs,
        popen_python_with_stubs,
        python_with_stubs,
    )

PEER = str(Path(__file__).resolve().parent / "compat_peer.py")
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def released_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_stubs(tmp_path_factory.mktemp("released"), image=RELEASED_IMAGE)


@pytest.fixture(scope="module")
def future_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("future")
    return generate_stubs(directory / "stubs", image=future_image(directory / "future.binpb"))


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _run_peer_client(stubs: Path, target: str, *flags: str) -> list[dict[str, Any]]:
    run = python_with_stubs(stubs, PEER, "client", target, *flags, timeout=TIMEOUT_S)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    lines = _lines(run.stdout)
    assert lines[0] == {"step": "stubs", "path": str(stubs / "execgw/v1/orders_pb2.py")}
    return lines[1:]


class PeerGateway:
    """compat_peer.py serving on loopback; `log()` stops it and returns what it received."""

    def __init__(self, stubs: Path, contract: str) -> None:
        self._proc: subprocess.Popen[str] = popen_python_with_stubs(stubs, PEER, "serve", contract)
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()  # the port, once it listens
        if not first:
            _, err = self._proc.communicate(timeout=TIMEOUT_S)
            raise AssertionError(f"the peer gateway did not start:\n{err}")
        started = json.loads(first)
        assert started["stubs"] == str(stubs / "execgw/v1/orders_pb2.py")
        self.target = f"127.0.0.1:{started['port']}"
        self._log: list[dict[str, Any]] | None = None

    def log(self) -> list[dict[str, Any]]:
        if self._log is None:
            out, err = self._proc.communicate(timeout=TIMEOUT_S)  # closes stdin: it stops
            assert self._proc.returncode == 0, err
            self._log = _lines(out)
        return self._log

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate(timeout=TIMEOUT_S)


@pytest.fixture
def peer_gateway() -> Iterator[list[PeerGateway]]:
    started: list[PeerGateway] = []
    yield started
    for peer in started:
        peer.kill()


def _released_numbers(message: str) -> set[int]:
    """Field numbers `execgw.v1.<message>` has in the released contract."""
    image = descriptor_pb2.FileDescriptorSet.FromString(RELEASED_IMAGE.read_bytes())
    for file in image.file:
        if file.package == "execgw.v1":
            for m in file.message_type:
                if m.name == message:
                    return {f.number for f in m.field}
    raise AssertionError(f"{message} is not in the released contract")


def _newer_than_released(message: Message) -> list[int]:
    """Numbers of the fields set on `message` that the released contract does not have:
    exactly what a released client receives as unknown fields."""
    released = _released_numbers(message.DESCRIPTOR.name)
    return sorted(f.number for f, _ in message.ListFields() if f.number not in released)


def _unknown(message: Message) -> list[int]:
    found = unknown_fields.UnknownFieldSet(message)
    return sorted({found[i].field_number for i in range(len(found))})


def _quote() -> market_data_pb2.Quote:
    return market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0, bid=1499.95, ask=1500.05)


def test_released_client_trades_against_the_current_gateway(
    gateway: RunningGateway, released_stubs: Path
) -> None:
    lines = _run_peer_client(released_stubs, gateway.target)
    with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as current:
        bought = current.get_order("O0000000001")
        cancelled = current.get_order("O0000000002")
        (position,) = current.positions("peer")
        fill = next(iter(current.stream_fills(from_sequence=4, strategy_codes=["peer"])))
    assert (fill.sequence, fill.WhichOneof("payload")) == (4, "fill")
    # The resting order as it was when placed is gone; any field it had beyond the
    # released contract is one ExecutionResult has gained since.
    placed_unknown = lines[2].pop("unknown")
    gained = {f.number for f in orders_pb2.ExecutionResult.DESCRIPTOR.fields}
    assert set(placed_unknown) <= gained - _released_numbers("ExecutionResult")
    # Whatever the current contract added reaches the released client as unknown fields,
    # and changes nothing it reads.
    order = {"filled_qty": 10, "avg_price": 1500.75, "price": None}
    resting = {"order_id": "O0000000002", "client_order_id": "peer-lmt", "filled_qty": 0}
    resting |= {"avg_price": None, "price": 1510.0}
    assert lines == [
        {"step": "quote", "accepted": 1},
        {
            "step": "market",
            "order_id": "O0000000001",
            "client_order_id": "peer-mkt",
            "status": "ORDER_STATUS_FILLED",
            **order,
            "unknown": _newer_than_released(bought),
        },
        {"step": "limit", **resting, "status": "ORDER_STATUS_PLACED"},
        {
            "step": "cancel",
            **resting,
            "status": "ORDER_STATUS_CANCELLED",
            "unknown": _newer_than_released(cancelled),
        },
        {
            "step": "position",
            "net_qty": 10,
            "avg_price": 1500.75,
            "unrealized_pnl_decimal": "-7.50",
            "unknown": _newer_than_released(position),
        },
        {"step": "event", "sequence": 3, "kind": "order_update", "status": "ORDER_STATUS_PLACED"},
        {
            "step": "event",
            "sequence": 4,
            "kind": "fill",
            "price": 1500.75,
            "unknown": _newer_than_released(fill.fill),
        },
        {"step": "event", "sequence": 5, "kind": "order_update", "status": "ORDER_STATUS_PLACED"},
        {
            "step": "event",
            "sequence": 6,
            "kind": "order_update",
            "status": "ORDER_STATUS_CANCELLED",
        },
        {"step": "live", "head_sequence": 6},
    ]


def test_current_client_trades_against_a_released_gateway(
    released_stubs: Path, peer_gateway: list[PeerGateway]
) -> None:
    peer = PeerGateway(released_stubs, "released")
    peer_gateway.append(peer)
    with ExecutionClient(peer.target, timeout=TIMEOUT_S) as client:
        assert client.publish_quotes([_quote()]) == 1
        bought = client.submit(market("NSE:INFY", "BUY", 10, strategy_code="peer"), "cur-mkt")
        resting = client.submit(
            limit("NSE:INFY", "SELL", 10, 1510.0, strategy_code="peer"), "cur-lmt"
        )
        cancelled = client.cancel(resting.order_id)
        positions = client.positions("peer")
        events = list(
            client.stream_fills(from_sequence=1, include_order_updates=True, reconnect=False)
        )
    assert (bought.status, bought.filled_qty, bought.avg_price) == (
        orders_pb2.ORDER_STATUS_FILLED,
        10,
        1500.75,
    )
    assert (resting.status, resting.price) == (orders_pb2.ORDER_STATUS_PLACED, 1510.0)
    assert cancelled.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert [(p.net_qty, p.unrealized_pnl_decimal) for p in positions] == [(10, "-7.50")]
    assert [(e.sequence, e.WhichOneof("payload")) for e in events] == [
        (3, "order_update"),
        (5, "fill"),
    ]
    assert events[1].fill.price == 1500.75

    received = {line["step"]: line for line in peer.log() if line["step"] != "received_submit"}
    submits = [line for line in peer.log() if line["step"] == "received_submit"]
    assert received["received_quotes"]["ltps"] == [1500.0]
    assert received["received_stream"]["from_sequence"] == 1
    # An older gateway skips what it does not know, so whatever the current client adds
    # (an exact price, say) must never replace what the released contract reads: the
    # LIMIT's price arrives as the double, the MARKET has none.
    assert [(s["client_order_id"], s["order_type"], s["qty"], s["price"]) for s in submits] == [
        ("cur-mkt", orders_pb2.ORDER_TYPE_MARKET, 10, None),
        ("cur-lmt", orders_pb2.ORDER_TYPE_LIMIT, 10, 1510.0),
    ]
    released_intent = _released_numbers("OrderIntent") | _released_numbers("SubmitOrderRequest")
    for s in submits:
        assert not set(s["unknown"]) & released_intent


def test_current_client_reads_a_newer_gateway_without_misreading_it(
    future_stubs: Path, peer_gateway: list[PeerGateway]
) -> None:
    peer = PeerGateway(future_stubs, "future")
    peer_gateway.append(peer)
    with ExecutionClient(peer.target, timeout=TIMEOUT_S) as client:
        bought = client.submit(market("NSE:INFY", "BUY", 10, strategy_code="peer"), "cur-mkt")
        (position,) = client.positions("peer")
        events = list(
            client.stream_fills(from_sequence=1, include_order_updates=True, reconnect=False)
        )
    # A status this client does not know stays its number; everything else reads as sent.
    assert bought.status == FUTURE_STATUS
    assert bought.status not in orders_pb2.OrderStatus.values()
    assert (bought.order_id, bought.filled_qty, bought.avg_price) == ("P-cur-mkt", 10, 1500.75)
    assert _unknown(bought) == [FUTURE_FIELD]
    # The legacy dict has no room for an unknown status: it says so instead of guessing.
    with pytest.raises(ValueError, match="newer than this client"):
        result_to_legacy(bought)
    assert (position.net_qty, position.unrealized_pnl_decimal) == (10, "-7.50")
    assert _unknown(position) == [FUTURE_FIELD]
    # An event of a kind this client does not know is still an event: it is handed over
    # (no payload set) and the stream's position moves past it, so a resume cannot
    # replay or skip anything.
    assert [(e.sequence, e.WhichOneof("payload")) for e in events] == [
        (3, "order_update"),
        (4, None),
        (5, "fill"),
    ]
    assert _unknown(events[1]) == [FUTURE_FIELD]
    assert events[0].order_update.status == FUTURE_STATUS
    assert (events[2].fill.price, _unknown(events[2].fill)) == (1500.75, [FUTURE_FIELD])


def test_newer_client_trades_against_the_current_gateway(
    gateway: RunningGateway, future_stubs: Path
) -> None:
    lines = _run_peer_client(future_stubs, gateway.target, "--future")
    by_step = {line["step"]: line for line in lines if line["step"] != "event"}
    # Intents carrying a field this gateway does not know trade as usual.
    assert (by_step["market"]["status"], by_step["market"]["avg_price"]) == (
        "ORDER_STATUS_FILLED",
        1500.75,
    )
    assert by_step["limit"]["status"] == "ORDER_STATUS_PLACED"
    assert by_step["cancel"]["status"] == "ORDER_STATUS_CANCELLED"
    assert by_step["position"]["unrealized_pnl_decimal"] == "-7.50"
    assert [(e["sequence"], e["kind"]) for e in lines if e["step"] == "event"] == [
        (3, "order_update"),
        (4, "fill"),
        (5, "order_update"),
        (6, "order_update"),
    ]
    # A value the gateway's contract does not name is refused, never read as another.
    assert by_step["unknown_side"]["code"] == "INVALID_ARGUMENT"
    assert by_step["unknown_side"]["details"].startswith("intent.side: ")
    assert by_step["unknown_status_filter"] == {
        "step": "unknown_status_filter",
        "code": "INVALID_ARGUMENT",
        "details": f"status: {FUTURE_STATUS} is not an OrderStatus",
    }
    with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as current:
        assert len(current.list_orders(strategy_code="peer")) == 2  # no order for side 99
