"""Maps core refusals to gRPC status codes; anything unexpected becomes a bare INTERNAL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc

from execgw.server.api import auth
from execgw.server.errors import (
    CommandFailed,
    Forbidden,
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
    CommandFailed: grpc.StatusCode.INTERNAL,
}

_R = TypeVar("_R")


async def abort_for(error: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    if isinstance(error, Forbidden):
        await auth.denied(context, error)  # PERMISSION_DENIED, journaled
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


async def write_stream(
    context: grpc.aio.ServicerContext[Any, Any],
    responses: Callable[[], AsyncIterator[Any]],
) -> None:
    """Write a server stream with context.write; end quietly once the call is over."""
    try:
        async for response in responses():
            if context.done():
                return
            try:
                await context.write(response)
            except Exception as e:
                if isinstance(e, grpc.aio.AbortError):
                    raise
                log.debug("stream write failed; the call is over: %r", e)
                return
    except Exception as e:
        if isinstance(e, grpc.aio.AbortError):
            raise
        if context.done():
            return  # the client left or the server is stopping: nothing to tell anyone
        await abort_for(e, context)
