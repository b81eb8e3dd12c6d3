"""Maps core refusals to gRPC status codes; anything unexpected becomes a bare INTERNAL.

INVALID_ARGUMENT also carries a google.rpc.BadRequest in the status details (the
`grpc-status-details-bin` trailer) with a field violation per malformed field, so a
program in any language can read which fields to fix without parsing the message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import google.rpc.code_pb2 as code_pb2
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2
from grpc_status import rpc_status

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
from execgw.server.validation import FieldViolation, InvalidRequest

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

# The BadRequest details stop before this many bytes (they travel in a trailer, which
# HTTP/2 peers cap at 8-16 KiB with the message); each text within it is cut as well.
MAX_DETAILS_BYTES = 2048
_MAX_FIELD_CHARS = 128
_MAX_DESCRIPTION_CHARS = 256


# The status message travels twice (grpc-message, and inside the details): bounded in
# bytes, as ASCII, because non-ASCII text grows up to 12x once percent-encoded.
MAX_MESSAGE_BYTES = 1024


def _ascii(text: str, limit: int) -> str:
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def bad_request(violations: tuple[FieldViolation, ...]) -> error_details_pb2.BadRequest:
    """Every violation, in order, as far as MAX_DETAILS_BYTES allows (always the first)."""
    details = error_details_pb2.BadRequest()
    for violation in violations:
        details.field_violations.add(
            field=_ascii(violation.field, _MAX_FIELD_CHARS),
            description=_ascii(violation.description, _MAX_DESCRIPTION_CHARS),
        )
        if len(details.field_violations) > 1 and details.ByteSize() > MAX_DETAILS_BYTES:
            del details.field_violations[-1]
            break
    return details


def invalid_argument_status(error: InvalidRequest, message: str | None = None) -> grpc.Status:
    """INVALID_ARGUMENT with a BadRequest of every violation; `message` replaces the
    readable summary when the caller has a better sentence."""
    detail = any_pb2.Any()
    detail.Pack(bad_request(error.violations))
    return rpc_status.to_status(  # type: ignore[no-any-return]
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=_ascii(str(error) if message is None else message, MAX_MESSAGE_BYTES),
            details=[detail],
        )
    )


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status abort_for would end a call with, for an answer that carries it instead
    (one request of a stream); never a stack trace or internal detail."""
    if isinstance(error, Forbidden):
        return grpc.StatusCode.PERMISSION_DENIED, _ascii(str(error), MAX_MESSAGE_BYTES)
    for kind, code in _CODES.items():
        if isinstance(error, kind):
            return code, _ascii(str(error), MAX_MESSAGE_BYTES)
    if isinstance(error, GatewayError):
        return grpc.StatusCode.FAILED_PRECONDITION, _ascii(str(error), MAX_MESSAGE_BYTES)
    log.error("internal error", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error; see the gateway log"


async def abort_for(error: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    if isinstance(error, Forbidden):
        await auth.denied(context, error)  # PERMISSION_DENIED, journaled
    if isinstance(error, InvalidRequest):
        await context.abort_with_status(invalid_argument_status(error))
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
