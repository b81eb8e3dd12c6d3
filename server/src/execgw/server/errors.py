"""Refusals of the gateway core; the API layer maps each to a gRPC status."""

from __future__ import annotations


class GatewayError(Exception):
    """A command the engine refused; the API layer maps each subclass to a gRPC status."""


class IdempotencyConflict(GatewayError):
    pass


class NotFound(GatewayError):
    pass


class OrderNotFound(NotFound):
    pass


class QuoteNotFound(NotFound):
    pass


class OrderNotCancellable(GatewayError):
    pass


class Forbidden(GatewayError):
    """The authenticated caller may not do this: PERMISSION_DENIED, journaled (AccessDenied)."""


class GatewayUnavailable(GatewayError):
    pass


class CommandFailed(GatewayError):
    """A bug hit while executing one command. That command is dropped whole and its caller
    told so; the rest of its batch is unaffected."""
