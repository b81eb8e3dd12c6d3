"""Exceptions raised by the execgw client.

Callers catch these instead of ``grpc.RpcError`` so that strategy code does not
depend on gRPC internals, and so one ``except ExecgwError`` covers every failure.
A rejected order is not an error: it comes back as an ``ExecutionResult`` whose
status is ``ORDER_STATUS_REJECTED``.

``InvalidArgument.field_violations`` lists every malformed field of the request as
``(field, description)`` pairs, e.g. ``[("intent.qty", "must be > 0, got 0"),
("intent.price", "is required for LIMIT orders")]``. They come from the
``google.rpc.BadRequest`` the gateway puts in the status details, read without
googleapis-common-protos (the client needs only grpcio and protobuf); the list is
empty when a server sends no details.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from execgw.client._status_details import field_violations as _field_violations

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "ExecgwError",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_for_code",
    "from_rpc_error",
]


class ExecgwError(Exception):
    """Base of every client error; ``code`` is the gRPC status that caused it."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        details: str = "",
        code: grpc.StatusCode | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details
        # (field, description) per malformed field; only INVALID_ARGUMENT has them.
        self.field_violations: list[tuple[str, str]] = list(field_violations)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(details={self.details!r}, code={self.code})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep ``code`` across pickling (multiprocessing, logging handlers).
        return (type(self), (self.details, self.code, self.field_violations))


class InvalidArgument(ExecgwError):
    """The request itself is malformed; retrying it unchanged cannot succeed.

    ``field_violations`` says which fields, as ``(field, description)`` pairs."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ExecgwError):
    """No such order or symbol."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ExecgwError):
    """A client_order_id was reused for a different order."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ExecgwError):
    """The gateway's state does not allow the call (e.g. cancelling a filled order)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ExecgwError):
    """A value such as a replay sequence is outside what the gateway holds."""

    code = grpc.StatusCode.OUT_OF_RANGE


class PermissionDenied(ExecgwError):
    """The caller may not perform this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ExecgwError):
    """The caller's credentials are missing or invalid."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ExecgwError):
    """A gateway limit (rate, size) was hit; back off before trying again."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ExecgwError):
    """The gateway could not be reached; raised after the client's retries ran out."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ExecgwError):
    """No answer within the deadline; a submit may still have been placed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(ExecgwError):
    """The gateway does not know this call: client and server versions differ."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ExecgwError):
    """The gateway hit a bug; the details are worth reporting."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[ExecgwError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        OutOfRange,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        Internal,
    )
}


def error_for_code(
    code: grpc.StatusCode, details: str = "", field_violations: Iterable[tuple[str, str]] = ()
) -> ExecgwError:
    """Build the most specific error for ``code``; codes without a class keep the base."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return ExecgwError(details, code, field_violations)
    return cls(details, field_violations=field_violations)


def rpc_error_code(error: grpc.RpcError) -> grpc.StatusCode:
    """Status code of ``error``; a bare ``grpc.RpcError`` has no ``code()`` at runtime."""
    code = getattr(error, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def from_rpc_error(error: grpc.RpcError) -> ExecgwError:
    """Translate a gRPC failure into the matching ``ExecgwError`` subclass."""
    details = getattr(error, "details", None)
    text = details() if callable(details) else None
    code = rpc_error_code(error)
    violations: list[tuple[str, str]] = []
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        trailing = getattr(error, "trailing_metadata", None)
        violations = _field_violations(trailing() if callable(trailing) else None)
    return error_for_code(code, text if isinstance(text, str) else "", violations)
