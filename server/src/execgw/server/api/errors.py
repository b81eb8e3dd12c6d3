"""Maps core refusals to gRPC status codes; anything unexpected becomes a bare INTERNAL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc

from execgw.server.errors import (
    GatewayError,
    GatewayUnavailable,
    IdempotencyConflict,
    NotFound,
    OrderNotCancellable,
)
from execgw.server.validation import InvalidRequest

log = logging.getLogger(__name__)

_CODES: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    IdempotencyConflict: grpc.StatusCode.ALREADY_EXISTS,
    NotFound: grpc.StatusCode.NOT_FOUND,
    OrderNotCancellable: grpc.StatusCode.FAILED_PRECONDITION,
    GatewayUnavailable: grpc.StatusCode.UNAVAILABLE,
}

_R = TypeVar("_R")


async def abort_for(error: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    for kind, code in _CODES.items():
        if isinstance(error, kind):
            await context.abort(code, str(error))
    if isinstance(error, GatewayError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    # Never leak a stack trace or internal detail to a client; the log has it.
    log.error("internal error", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway log")


def unary(
    handler: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[_R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[_R]]:
    @wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> _R:
        try:
            return await handler(self, request, context)
        except Exception as e:
            if isinstance(e, grpc.aio.AbortError):
                raise
            await abort_for(e, context)

    return wrapped


def streaming(
    handler: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[_R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[_R]]:
    @wraps(handler)
    async def wrapped(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[_R]:
        try:
            async for item in handler(self, request, context):
                yield item
        except Exception as e:
            if isinstance(e, grpc.aio.AbortError):
                raise
            if context.done():
                return  # the call already ended (client gone, server stopping)
            await abort_for(e, context)

    return wrapped
