"""Malformed requests are INVALID_ARGUMENT, and no message names an internal class, file
or path (issue 8, defect 7).

Bytes that are no valid message are sent with generic calls (no serializer), to every
RPC of every service the gateway serves, as a hostile or broken client would send them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from execgw.server.app import SERVICE_NAMES
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
else:
    from conftest import RunningGateway

TIMEOUT_S = 10.0
# Not parseable as any message: a zero field number, a length running past the end, a
# varint that never ends.
FIXED_GARBAGE = (b"\x00", b"\x0a\x05ab", b"\xff" * 11)
# What no client-facing message may contain: signs of a Python class, module or path.
LEAKS = ("<class", "Error", "Exception", "Traceback", ".py", "/", "\\", "google.", "grpc._")


def _methods() -> list[MethodDescriptor]:
    files = (gateway_pb2.DESCRIPTOR, market_data_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR)
    services = [s for f in files for s in f.services_by_name.values()]
    served = {*SERVICE_NAMES, "grpc.health.v1.Health"}
    assert {s.full_name for s in services} == served, "a served service is not covered"
    return [m for s in services for m in s.methods]


METHODS = _methods()


def _garbage_for(method: MethodDescriptor) -> list[bytes]:
    """The fixed garbage plus seeded random bytes that really fail to parse as the input."""
    message_class: Any = GetMessageClass(method.input_type)
    rng = random.Random(method.full_name)
    found = list(FIXED_GARBAGE)
    while len(found) < len(FIXED_GARBAGE) + 3:
        candidate = rng.randbytes(rng.randint(1, 64))
        try:
            message_class.FromString(candidate)
        except DecodeError:
            found.append(candidate)
    return found


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@pytest.fixture
def channel(gateway: RunningGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.target) as ch:
        yield ch


def _assert_clean_invalid_argument(error: grpc.RpcError, expected: str) -> None:
    call: Any = error
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT, (call.code(), call.details())
    details = str(call.details())
    assert details == expected
    for leak in LEAKS:
        # The expected message type's full name is the one dotted name allowed.
        assert leak not in details.replace(expected, ""), details


@pytest.mark.parametrize(
    "method",
    [m for m in METHODS if not m.client_streaming],
    ids=[m.full_name for m in METHODS if not m.client_streaming],
)
def test_garbage_request_is_invalid_argument_naming_the_message(
    channel: grpc.Channel, method: MethodDescriptor
) -> None:
    expected = f"request is not a valid {method.input_type.full_name}"
    for garbage in _garbage_for(method):
        if method.server_streaming:
            stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                _path(method)
            )
            with pytest.raises(grpc.RpcError) as caught:
                list(stream(garbage, timeout=TIMEOUT_S))
        else:
            unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_path(method))
            with pytest.raises(grpc.RpcError) as caught:
                unary(garbage, timeout=TIMEOUT_S)
        _assert_clean_invalid_argument(caught.value, expected)


def test_corrupt_publish_quotes_frame_is_invalid_argument_naming_its_index(
    channel: grpc.Channel,
) -> None:
    good = market_data_pb2.PublishQuotesRequest(
        quotes=[market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)]
    ).SerializeToString()
    publish: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
        "/execgw.v1.MarketData/PublishQuotes"
    )
    for garbage in FIXED_GARBAGE:
        with pytest.raises(grpc.RpcError) as caught:
            publish(iter([good, good, garbage, good]), timeout=TIMEOUT_S)
        _assert_clean_invalid_argument(
            caught.value, "request 2 of the stream is not a valid execgw.v1.PublishQuotesRequest"
        )
    # The refusals hurt nothing: the same stream, well formed, is applied.
    accepted = market_data_pb2.PublishQuotesResponse.FromString(
        publish(iter([good, good]), timeout=TIMEOUT_S)
    ).accepted
    assert accepted == 2


def test_corrupt_reflection_frame_is_invalid_argument(channel: grpc.Channel) -> None:
    """The bidirectional stream of the reflection service: the last kind of method."""
    reflect: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(reflect(iter([b"\x00"]), timeout=TIMEOUT_S))
    _assert_clean_invalid_argument(
        caught.value,
        "request 0 of the stream is not a valid grpc.reflection.v1alpha.ServerReflectionRequest",
    )


@pytest.mark.parametrize("status", [9, 99, -1, 2**31 - 1])
def test_list_orders_with_an_unknown_status_is_invalid_argument_naming_status(
    channel: grpc.Channel, status: int
) -> None:
    stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
    for known in orders_pb2.OrderStatus.values():
        stub.ListOrders(gateway_pb2.ListOrdersRequest(status=known), timeout=TIMEOUT_S)
    # proto3 keeps an unknown enum number as it is: this is what a newer or broken
    # client sends, and it must not be read as "any status".
    request = gateway_pb2.ListOrdersRequest(status=status)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListOrders(request, timeout=TIMEOUT_S)
    call: Any = caught.value
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert call.details() == f"status: {status} is not an OrderStatus"
