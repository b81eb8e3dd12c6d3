"""Requests are parsed inside the call, so bytes that are no valid message are
INVALID_ARGUMENT with a message that names the expected message type and nothing else.

Left to grpc, a unary request that fails to parse ends UNKNOWN with a message naming a
Python exception class, and a bad frame of a client stream surfaces inside the servicer
as an unexpected exception (INTERNAL).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc

from execgw.server.api.errors import invalid_argument_status
from execgw.server.api.method_handlers import (
    Context,
    Continuation,
    Deserializer,
    Handler,
    WrappedHandlers,
    behavior_of,
    rebuild,
    wrap,
)
from execgw.server.validation import InvalidRequest


class RequestDecodingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        found = self._wrapped.get(method, handler)
        if found is not None:
            return found
        return self._wrapped.keep(method, handler, _decoding(handler, method))


def _decoding(handler: Handler, method: str) -> Handler:
    """`handler` taking the raw bytes (request_deserializer=None) and parsing them."""
    decoder = _Decoder(handler.request_deserializer, method)
    if handler.request_streaming:
        return wrap(
            handler, decoder.stream, request_deserializer=None, around_sync=decoder.stream_sync
        )
    inner = behavior_of(handler)
    if inspect.iscoroutinefunction(inner):
        # The commonest call (SubmitOrder's kind), written out: `wrap` would hold the
        # decoding in an async context manager, an async generator per call.
        decode = decoder._decode

        async def decoded(raw: bytes, context: Context) -> Any:
            return await inner(await decode(raw, context, "request"), context)

        return rebuild(handler, decoded, request_deserializer=None)
    return wrap(handler, decoder.single, request_deserializer=None, around_sync=decoder.single_sync)


class _Decoder:
    def __init__(self, deserialize: Deserializer, method: str) -> None:
        assert deserialize is not None
        self._deserialize = deserialize
        self._expected = _message_name(deserialize, method)

    @asynccontextmanager
    async def single(self, raw: bytes, context: Context) -> AsyncIterator[Any]:
        yield await self._decode(raw, context, "request")

    @asynccontextmanager
    async def stream(
        self, raw_requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[AsyncIterator[Any]]:
        async def decoded() -> AsyncIterator[Any]:
            index = 0
            async for raw in raw_requests:
                yield await self._decode(raw, context, f"request {index} of the stream")
                index += 1

        yield decoded()

    async def _decode(self, raw: bytes, context: Context, what: str) -> Any:
        try:
            return self._deserialize(raw)
        except Exception:
            await context.abort_with_status(self._refusal(what))

    # grpc.aio runs a synchronous behavior (e.g. the health service's List) on a worker
    # thread, with a context whose abort is synchronous.

    @contextmanager
    def single_sync(self, raw: bytes, context: Any) -> Iterator[Any]:
        yield self._decode_sync(raw, context, "request")

    @contextmanager
    def stream_sync(self, raw_requests: Iterator[bytes], context: Any) -> Iterator[Iterator[Any]]:
        def decoded() -> Iterator[Any]:
            for index, raw in enumerate(raw_requests):
                yield self._decode_sync(raw, context, f"request {index} of the stream")

        yield decoded()

    def _decode_sync(self, raw: bytes, context: Any, what: str) -> Any:
        try:
            return self._deserialize(raw)
        except Exception:
            # A synchronous context has no abort_with_status: the text only, there.
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} {self._problem}")
            raise  # abort raises; this keeps a failed abort from passing silently

    def _refusal(self, what: str) -> grpc.Status:
        """INVALID_ARGUMENT with its BadRequest, as every other INVALID_ARGUMENT has."""
        field = "request" if what == "request" else f"request[{what.split()[1]}]"
        return invalid_argument_status(
            InvalidRequest(field, self._problem), f"{what} {self._problem}"
        )

    @property
    def _problem(self) -> str:
        return f"is not a valid {self._expected}"


def _message_name(deserialize: Callable[[bytes], Any], method: str) -> str:
    """The message type's full name (execgw.v1.SubmitOrderRequest) for generated stubs."""
    message_class = getattr(deserialize, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    return full_name if isinstance(full_name, str) else f"request message for {method}"
