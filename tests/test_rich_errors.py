"""INVALID_ARGUMENT names every malformed field: a google.rpc.BadRequest in the status
details (read here with grpcio-status, as any gRPC program would, and by the Python
client's own reader), a human-readable message starting with the first field, and
`InvalidArgument.field_violations` on the client. Also: an empty client_order_id is
refused unless execution.require_client_order_id is turned off.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google.rpc.error_details_pb2 as error_details_pb2
import grpc
import pytest
from grpc_status import rpc_status

from execgw.client import (
    AsyncExecutionClient,
    ExecutionClient,
    InvalidArgument,
    OrderStatus,
    from_rpc_error,
    market,
)
from execgw.client._status_details import field_violations
from execgw.server.api.errors import MAX_DETAILS_BYTES, bad_request
from execgw.server.clock import ManualClock
from execgw.server.validation import FieldViolation, InvalidRequest
from execgw.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
    orders_pb2,
)

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish, raw_intent
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish, raw_intent

# A LIMIT order with four things wrong, in field order.
BAD_INTENT: dict[str, Any] = {
    "symbol": "nse:infy",
    "side": orders_pb2.SIDE_UNSPECIFIED,
    "qty": 0,
    "order_type": orders_pb2.ORDER_TYPE_LIMIT,
    "tag": "x" * 21,
}
BAD_FIELDS = ["intent.symbol", "intent.side", "intent.qty", "intent.price", "intent.tag"]


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target) as client:
            publish(client, INFY, 1500.0)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def channel(running: RunningGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(running.target) as ch:
        yield ch


def _bad_request(error: grpc.RpcError) -> error_details_pb2.BadRequest:
    """The BadRequest of a failed call, read the way grpcio-status users read it."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    [detail] = status.details
    found = error_details_pb2.BadRequest()
    assert detail.Unpack(found)
    return found


def test_every_violation_of_an_intent_is_in_the_bad_request(channel: grpc.Channel) -> None:
    stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
    request = gateway_pb2.SubmitOrderRequest(intent=raw_intent(**BAD_INTENT))
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitOrder(request, timeout=TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = _bad_request(info.value)
    # Field order, the empty idempotency key last (it is field 2 of the request).
    assert [v.field for v in details.field_violations] == [*BAD_FIELDS, "client_order_id"]
    assert all(v.description for v in details.field_violations)
    message = info.value.details() or ""
    assert message.startswith("intent.symbol: 'nse:infy' is not in EXCHANGE:TRADINGSYMBOL form")
    for violation in details.field_violations:
        assert f"{violation.field}: {violation.description}" in message

    # PreviewOrder validates the same way.
    with pytest.raises(grpc.RpcError) as info:
        stub.PreviewOrder(
            gateway_pb2.PreviewOrderRequest(intent=raw_intent(**BAD_INTENT)), timeout=TIMEOUT_S
        )
    assert [v.field for v in _bad_request(info.value).field_violations] == BAD_FIELDS


def test_the_python_client_exposes_the_violations(running: RunningGateway) -> None:
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        with pytest.raises(InvalidArgument) as info:
            client.submit(raw_intent(**BAD_INTENT))
        error = info.value
        assert [field for field, _ in error.field_violations] == BAD_FIELDS
        assert ("intent.qty", "must be > 0, got 0") in error.field_violations
        assert ("intent.price", "is required for LIMIT orders") in error.field_violations
        assert error.details.startswith("intent.symbol: ")
        # Pickled (multiprocessing, logging), the violations stay.
        copy = pickle.loads(pickle.dumps(error))
        assert isinstance(copy, InvalidArgument)
        assert copy.field_violations == error.field_violations

        # Other calls too: one violation per field of a kill-switch request.
        with pytest.raises(InvalidArgument) as info:
            client.halt("why\n", strategy_code="-bad", actor="a" * 129)
        assert [f for f, _ in info.value.field_violations] == ["strategy_code", "reason", "actor"]


async def test_the_async_client_exposes_the_violations(running: RunningGateway) -> None:
    async with AsyncExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        with pytest.raises(InvalidArgument) as info:
            await client.submit(raw_intent(**BAD_INTENT))
        assert [field for field, _ in info.value.field_violations] == BAD_FIELDS
        with pytest.raises(InvalidArgument) as info:
            await client.list_orders_page(strategy_code="bad code", page_token="nope")
        assert [f for f, _ in info.value.field_violations] == ["strategy_code", "page_token"]


def test_stream_and_list_requests_name_every_field(channel: grpc.Channel) -> None:
    stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
    request = gateway_pb2.StreamFillsRequest(
        strategy_codes=["ok", "not ok"], symbols=["NSE:INFY", "infy"], heartbeat_interval_ms=1
    )
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stub.StreamFills(request, timeout=TIMEOUT_S)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in _bad_request(info.value).field_violations] == [
        "strategy_codes[1]",
        "symbols[1]",
        "heartbeat_interval_ms",
    ]
    with pytest.raises(grpc.RpcError) as info:
        stub.ListOrders(
            gateway_pb2.ListOrdersRequest(
                symbol="x", status=orders_pb2.OrderStatus.ValueType(99), page_size=-1
            ),
            timeout=TIMEOUT_S,
        )
    assert [v.field for v in _bad_request(info.value).field_violations] == [
        "symbol",
        "status",
        "page_size",
    ]


def test_a_request_full_of_bad_quotes_gets_bounded_details(channel: grpc.Channel) -> None:
    """Every quote of the failing request is checked; the details stop at 2 KiB and the
    message counts what it leaves out, so the trailer always fits."""
    stub = market_data_pb2_grpc.MarketDataStub(channel)
    quotes = [market_data_pb2.Quote(symbol=INFY, ltp=-1.0, bid_qty=-1) for _ in range(500)]
    with pytest.raises(grpc.RpcError) as info:
        stub.PublishQuotes(
            iter([market_data_pb2.PublishQuotesRequest(quotes=quotes)]), timeout=TIMEOUT_S
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = _bad_request(info.value)
    assert 10 < len(details.field_violations) < 1000
    assert details.ByteSize() <= MAX_DETAILS_BYTES
    assert [v.field for v in details.field_violations[:4]] == [
        "quotes[0].ltp",
        "quotes[0].bid_qty",
        "quotes[1].ltp",
        "quotes[1].bid_qty",
    ]
    message = info.value.details() or ""
    assert message.startswith("quotes[0].ltp: must be > 0, got -1.0; quotes[0].bid_qty: ")
    assert message.endswith(" more)")
    assert len(message) < 1200
    error = from_rpc_error(info.value)
    assert isinstance(error, InvalidArgument)
    assert len(error.field_violations) == len(details.field_violations)


def test_a_request_that_is_no_valid_message_names_the_request(channel: grpc.Channel) -> None:
    """Refused before any field is read, still with its BadRequest."""
    call = channel.unary_unary(
        "/execgw.v1.ExecutionGateway/SubmitOrder",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff", timeout=TIMEOUT_S)
    error = from_rpc_error(info.value)
    assert isinstance(error, InvalidArgument)
    assert error.field_violations == [("request", "is not a valid execgw.v1.SubmitOrderRequest")]


def test_details_reader_ignores_what_it_cannot_read() -> None:
    assert field_violations(None) == []
    assert field_violations([("grpc-status-details-bin", b"\xff\xff\xff")]) == []
    assert field_violations([("grpc-status-details-bin", "text, not bytes")]) == []
    status = rpc_status.status_pb2.Status(code=3, message="m")
    detail = status.details.add()
    detail.Pack(bad_request((FieldViolation("a", "b"), FieldViolation("c", "d"))))
    other = status.details.add()
    other.Pack(error_details_pb2.RetryInfo())
    raw = status.SerializeToString()
    assert field_violations([("other", b""), ("grpc-status-details-bin", raw)]) == [
        ("a", "b"),
        ("c", "d"),
    ]


def test_bad_request_keeps_the_first_violation_and_cuts_long_texts() -> None:
    huge = FieldViolation("f" * 1000, "d" * 5000)
    assert bad_request((huge,)).field_violations[0].field == "f" * 125 + "..."
    details = bad_request(tuple(FieldViolation(f"f{i}", "d" * 300) for i in range(100)))
    assert details.ByteSize() <= MAX_DETAILS_BYTES
    assert details.field_violations[0].field == "f0"
    error = InvalidRequest.of(FieldViolation(f"f{i}", "d" * 100) for i in range(100))
    assert str(error).startswith("f0: ")
    assert str(error).endswith(" more)")
    assert (error.field, error.message) == ("f0", "d" * 100)


# -- require_client_order_id -------------------------------------------------------


def _submit_without_key(target: str) -> orders_pb2.ExecutionResult:
    with grpc.insecure_channel(target) as ch:
        stub = gateway_pb2_grpc.ExecutionGatewayStub(ch)
        request = gateway_pb2.SubmitOrderRequest(intent=raw_intent())
        response: gateway_pb2.SubmitOrderResponse = stub.SubmitOrder(request, timeout=TIMEOUT_S)
        return response.result


def test_an_empty_client_order_id_is_refused_by_default(running: RunningGateway) -> None:
    assert running.config.execution.require_client_order_id
    head = running.gateway.core.head_sequence
    with pytest.raises(grpc.RpcError) as info:
        _submit_without_key(running.target)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [violation] = _bad_request(info.value).field_violations
    assert violation.field == "client_order_id"
    assert "idempotency key" in violation.description
    assert running.gateway.core.head_sequence == head  # nothing recorded


def test_with_the_switch_off_an_empty_key_gets_an_auto_id(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution={"require_client_order_id": False})
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target) as client:
            publish(client, INFY, 1500.0)
        first = _submit_without_key(gateway.target)
        second = _submit_without_key(gateway.target)
        assert first.status == OrderStatus.Value("ORDER_STATUS_FILLED")
        assert first.client_order_id == f"auto-{first.order_id}"
        # Which is why it is on by default: the "retry" placed a second order.
        assert second.order_id != first.order_id
    finally:
        gateway.stop()


def test_an_invalid_argument_with_long_non_ascii_text_still_fits_its_trailer(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Emoji in a metadata path, percent-encoded, once blew the trailer past HTTP/2's
    16 KiB and turned INVALID_ARGUMENT into RESOURCE_EXHAUSTED."""
    e = "\N{GRINNING FACE}"
    deep: dict[str, object] = {e * 280: {e * 280: {e * 280: {e * 280: "\x01"}}}}
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target) as client:
            for _ in range(5):
                with pytest.raises(InvalidArgument) as info:
                    client.submit(
                        market("NSE:INFY", "BUY", 1, strategy_code="s", metadata=deep), "emoji-1"
                    )
                assert info.value.field_violations
                assert len(info.value.details.encode()) <= 1100
    finally:
        gateway.stop()
