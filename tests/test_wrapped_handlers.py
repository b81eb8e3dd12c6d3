"""Interceptors build their wrapper of a method's handler once, not on every call, and
build it again when the handler they are given is another one."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from execgw.server.api.method_handlers import Handler, WrappedHandlers
from execgw.server.api.request_decoding import RequestDecodingInterceptor
from execgw.server.api.tracing import TelemetryInterceptor
from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.metrics import GatewayMetrics
from execgw.v1 import gateway_pb2

METHOD = "/execgw.v1.ExecutionGateway/GetOrder"


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _handler() -> Handler:
    async def get_order(request: Any, context: Any) -> Any:
        return gateway_pb2.GetOrderResponse()

    return grpc.unary_unary_rpc_method_handler(
        get_order,
        gateway_pb2.GetOrderRequest.FromString,
        gateway_pb2.GetOrderResponse.SerializeToString,
    )


def _through(interceptor: grpc.aio.ServerInterceptor, handler: Handler) -> Handler:
    async def continuation(details: grpc.HandlerCallDetails) -> Handler:
        return handler

    found = asyncio.run(interceptor.intercept_service(continuation, _Details(METHOD)))
    assert found is not None
    return found


@pytest.mark.parametrize(
    "interceptor",
    [
        RequestDecodingInterceptor(),
        TelemetryInterceptor(scopes.Scope("", "paper", False), GatewayMetrics()),
    ],
    ids=["decoding", "telemetry"],
)
def test_a_methods_wrapper_is_built_once_per_handler(
    interceptor: grpc.aio.ServerInterceptor,
) -> None:
    registered = _handler()
    first = _through(interceptor, registered)
    assert first is not registered  # wrapped
    assert _through(interceptor, registered) is first
    other = _handler()  # as an interceptor outside it that wraps per call would hand it
    rebuilt = _through(interceptor, other)
    assert rebuilt is not first
    assert _through(interceptor, other) is rebuilt


def test_the_cache_answers_only_for_the_handler_it_kept() -> None:
    cache = WrappedHandlers()
    kept, wrapped = _handler(), _handler()
    assert cache.get(METHOD, kept) is None
    assert cache.keep(METHOD, kept, wrapped) is wrapped
    assert cache.get(METHOD, kept) is wrapped
    assert cache.get(METHOD, _handler()) is None
    assert cache.get("/execgw.v1.ExecutionGateway/ListOrders", kept) is None
