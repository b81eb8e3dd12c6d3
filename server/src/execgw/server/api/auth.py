"""Who is calling, and what its role lets it do.

One interceptor (AuthInterceptor) runs around every call of both services, unary and
streaming. It reads `authorization: Bearer <token>` metadata, hashes the token and
compares the hash in constant time with every configured one (auth.tokens[].sha256):
a missing or unknown token is UNAUTHENTICATED from the call's headers, before its
request is read, logged at a bounded rate and never echoed. It then holds the caller's
role to PERMISSIONS, the one table of who may call what, and caps the StreamFills calls
each token has open. Health checks and server
reflection stay open: probes carry no token, and reflection describes only the
contract, which is public (proto/).

The principal travels to the servicers in a context variable, set for the duration of
the call. A strategy token may act only for its own strategy codes; the servicers ask
this module about each code a request names (`check_strategy`, `check_strategies`,
`scope`), and the core refuses an order outside the scope the same way whether it
exists or not. Every refusal of an authenticated caller is PERMISSION_DENIED and is
journaled (AccessDenied) with the principal's name, at a bounded rate per principal.

With no `auth` section there is no interceptor and no principal: every call is open,
and the functions here allow everything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, NoReturn

import grpc

from execgw.server.api.method_handlers import Context, Continuation, Handler, wrap
from execgw.server.clock import Clock
from execgw.server.config import AuthConfig, TokenConfig
from execgw.server.core import GatewayCore
from execgw.server.domain import Caller
from execgw.server.errors import Forbidden
from execgw.v1 import gateway_pb2, market_data_pb2

log = logging.getLogger(__name__)


class Role(StrEnum):
    STRATEGY = "strategy"
    OPERATOR = "operator"
    MARKET_DATA = "market_data"


_GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["ExecutionGateway"].full_name
_MARKET = market_data_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name
STRATEGY, OPERATOR, MARKET_DATA = Role.STRATEGY, Role.OPERATOR, Role.MARKET_DATA

# Who may call what. A method missing here is refused to every role. A strategy token
# is further held to its own strategy codes by each call's request (see the module doc).
PERMISSIONS: Mapping[str, frozenset[Role]] = {
    f"/{service}/{rpc}": frozenset(roles)
    for service, rpc, roles in (
        (_GATEWAY, "SubmitOrder", {STRATEGY}),
        (_GATEWAY, "SubmitOrders", {STRATEGY}),
        (_GATEWAY, "CancelOrder", {STRATEGY}),
        (_GATEWAY, "PreviewOrder", {STRATEGY, OPERATOR}),
        (_GATEWAY, "GetOrder", {STRATEGY, OPERATOR}),
        (_GATEWAY, "ListOrders", {STRATEGY, OPERATOR}),
        (_GATEWAY, "GetPositions", {STRATEGY, OPERATOR}),
        (_GATEWAY, "StreamFills", {STRATEGY, OPERATOR}),
        (_GATEWAY, "GetRiskState", {STRATEGY, OPERATOR}),
        (_GATEWAY, "HaltTrading", {OPERATOR}),
        (_GATEWAY, "ResumeTrading", {OPERATOR}),
        (_MARKET, "PublishQuotes", {MARKET_DATA}),
        (_MARKET, "GetQuote", {STRATEGY, OPERATOR, MARKET_DATA}),
    )
}
# Served to every caller, with a token or without.
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
AUTHORIZATION_KEY = "authorization"

# Refusals journaled per principal: this many at once, then one per second; the rest are
# counted into the next record (AccessDenied.suppressed), so a refused caller cannot
# flood the journal. Unauthenticated calls are logged at the same bounded rate.
DENIALS_BURST = 20
DENIALS_PER_SECOND = 1.0


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role
    # The strategy codes a strategy token acts for; None for the other roles.
    strategies: frozenset[str] | None
    max_streams: int
    caller: Caller

    @classmethod
    def of(cls, token: TokenConfig, auth: AuthConfig) -> Principal:
        role = Role(token.role)
        return cls(
            name=token.name,
            role=role,
            strategies=frozenset(token.strategies) if role is STRATEGY else None,
            max_streams=(
                auth.max_streams_per_token if token.max_streams is None else token.max_streams
            ),
            caller=Caller(
                token.name,
                token.orders_per_second or auth.orders_per_second,
                token.order_burst or auth.order_burst,
            ),
        )


class TokenTable:
    def __init__(self, auth: AuthConfig) -> None:
        self._entries = [
            (bytes.fromhex(token.sha256), Principal.of(token, auth)) for token in auth.tokens
        ]

    def principal(self, token: str) -> Principal | None:
        """The token's principal. Compared in constant time with every entry, whichever
        matches: the time taken says nothing about how close a guess came, or which."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for expected, principal in self._entries:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str]:
    """The bearer token in the call's metadata, or "" and what is wrong (never the value)."""
    values = [v for k, v in metadata or () if k == AUTHORIZATION_KEY]
    if not values:
        return "", "no authorization metadata; send 'authorization: Bearer <token>'"
    if len(values) > 1:
        return "", "more than one authorization metadata entry"
    value = values[0]
    if not isinstance(value, str):
        return "", "authorization metadata is not text"
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token or token != token.strip() or " " in token:
        return "", "authorization metadata is not 'Bearer <token>'"
    return token, ""


class Throttle:
    """Admits `burst` events at once per key and `per_second` after that, on the gateway's
    clock; counts the events it holds back."""

    def __init__(self, clock: Clock, per_second: float, burst: int) -> None:
        self._clock = clock
        self._per_second = per_second
        self._burst = float(burst)
        # key -> (tokens, refilled at, held back since the last admitted); keys are
        # principals' names (bounded by the config) and "" for unauthenticated calls.
        self._state: dict[str, tuple[float, datetime, int]] = {}

    def admit(self, key: str) -> int | None:
        """None: hold this one back. Else how many were held back since the last admitted."""
        now = self._clock.now()
        tokens, at, held = self._state.get(key, (self._burst, now, 0))
        elapsed = max((now - at).total_seconds(), 0.0)
        tokens = min(self._burst, tokens + elapsed * self._per_second)
        if tokens < 1.0:
            self._state[key] = (tokens, now, held + 1)
            return None
        self._state[key] = (tokens - 1.0, now, 0)
        return held


class DenialAudit:
    """Refuses an authenticated caller: journaled, at a bounded rate per principal."""

    def __init__(self, core: GatewayCore, clock: Clock) -> None:
        self._core = core
        self._throttle = Throttle(clock, DENIALS_PER_SECOND, DENIALS_BURST)

    async def deny(self, context: Context, principal: Principal, rpc: str, reason: str) -> NoReturn:
        await self.record(principal, rpc, reason)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    async def record(self, principal: Principal, rpc: str, reason: str) -> None:
        """Journal a refusal (at a bounded rate per principal) without ending the call."""
        held = self._throttle.admit(principal.name)
        if held is not None:
            more = f" ({held} more refused since, not journaled)" if held else ""
            log.warning("access denied to %r calling %s: %s%s", principal.name, rpc, reason, more)
            try:
                await self._core.record_denial(principal.name, rpc, reason, held)
            except Exception as e:  # a refusal stands even when it cannot be journaled
                log.error("could not journal the access denial of %r: %s", principal.name, e)


@dataclass(frozen=True, slots=True)
class _Call:
    principal: Principal
    rpc: str
    audit: DenialAudit


_CALL: ContextVar[_Call | None] = ContextVar("execgw_auth_call", default=None)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: AuthConfig, core: GatewayCore, clock: Clock) -> None:
        self._tokens = TokenTable(auth)
        self._audit = DenialAudit(core, clock)
        self._unauthenticated = Throttle(clock, DENIALS_PER_SECOND, DENIALS_BURST)
        # StreamFills calls open per principal; every behavior runs on the server's one
        # event loop, so plain counters are enough.
        self._streams: dict[str, int] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.lstrip("/").partition("/")[0] in OPEN_SERVICES:
            return handler
        rpc = method.rpartition("/")[2]
        # From the call's headers alone: a caller without a valid token is refused before
        # its request is read, so it cannot make the gateway hold a large message.
        token, problem = bearer_token(handler_call_details.invocation_metadata)
        principal = self._tokens.principal(token) if token else None
        if principal is None:
            return self._unauthenticated_handler(rpc, problem or "the token is not valid")
        return wrap(
            handler,
            partial(self._guard, method, principal, handler.response_streaming),
            request_deserializer=handler.request_deserializer,
            around_sync=_refuse_sync,
        )

    @asynccontextmanager
    async def _guard(
        self, method: str, principal: Principal, streaming: bool, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        rpc = method.rpartition("/")[2]
        if principal.role not in PERMISSIONS.get(method, frozenset()):
            await self._audit.deny(
                context, principal, rpc, f"role {principal.role} may not call {rpc}"
            )
        name = principal.name
        if streaming:
            open_now = self._streams.get(name, 0)
            if open_now >= principal.max_streams:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"token {name!r} already has {open_now} streams open, its limit "
                    "(auth.max_streams_per_token, or the token's max_streams); retry later",
                )
            self._streams[name] = open_now + 1
        reset = _CALL.set(_Call(principal, rpc, self._audit))
        try:
            yield request
        finally:
            if streaming:
                self._streams[name] -= 1
            with suppress(ValueError):  # finished in another context: nothing to undo there
                _CALL.reset(reset)

    def _unauthenticated_handler(self, rpc: str, problem: str) -> Handler:
        """A handler that refuses the call without reading its request: a request-streaming
        handler is called as soon as the call starts (a unary one only once the whole
        request has arrived), and to the client a refusal looks the same either way."""

        async def refuse(requests: Any, context: Context) -> None:
            held = self._unauthenticated.admit("")
            if held is not None:
                more = f" ({held} more refused since)" if held else ""
                log.warning(
                    "unauthenticated call to %s from %s: %s%s", rpc, context.peer(), problem, more
                )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        return grpc.stream_unary_rpc_method_handler(refuse)


@contextmanager
def _refuse_sync(request: Any, context: Any) -> Iterator[Any]:
    # The services checked here are all asyncio; a synchronous behavior would otherwise
    # run unchecked, so it is refused (abort raises).
    context.abort(grpc.StatusCode.INTERNAL, "this method is not served with authentication")
    yield request


# -- what the servicers ask ------------------------------------------------------------


def principal() -> Principal | None:
    """The caller of the current call; None when authentication is off."""
    call = _CALL.get()
    return None if call is None else call.principal


async def record_denial(error: Forbidden) -> None:
    """Journal `error` as a refusal of the current call, which goes on: one message of
    a stream refused alone (SubmitOrders)."""
    call = _CALL.get()
    if call is not None:
        await call.audit.record(call.principal, call.rpc, str(error))


def order_caller() -> Caller | None:
    """The caller as the core knows it (placed_by, its order rate); None with auth off."""
    call = _CALL.get()
    return None if call is None else call.principal.caller


def scope() -> frozenset[str] | None:
    """The strategy codes the caller may act for; None when it is not limited to some."""
    call = _CALL.get()
    return None if call is None else call.principal.strategies


def check_strategy(code: str, field: str) -> None:
    """Forbidden unless the caller may act for strategy `code`. Empty means every
    strategy: a strategy token is refused it, not narrowed to its own strategies."""
    allowed = scope()
    if allowed is None:
        return
    if not code:
        raise _every_strategy(field, allowed)
    if code not in allowed:
        raise Forbidden(f"{field}: strategy {code!r} is not one of this token's strategies")


def check_strategies(codes: Sequence[str], field: str) -> None:
    """As check_strategy for each of `codes`; none at all means every strategy."""
    allowed = scope()
    if allowed is None:
        return
    if not codes:
        raise _every_strategy(field, allowed)
    for index, code in enumerate(codes):
        check_strategy(code, f"{field}[{index}]")


def _every_strategy(field: str, allowed: frozenset[str]) -> Forbidden:
    return Forbidden(
        f"{field}: empty means every strategy; a strategy token must name its own "
        f"({', '.join(sorted(allowed))})"
    )


def actor(claimed: str, peer: str) -> str:
    """Who performs an admin action: the principal's name. With auth off, the request's
    actor or else the peer address, as before authentication existed."""
    call = _CALL.get()
    if call is None:
        return claimed or peer
    name = call.principal.name
    if claimed and claimed != name:
        raise Forbidden(
            f"actor {claimed!r} is not this token's name {name!r}; leave actor empty: the "
            "gateway records the token's name"
        )
    return name


async def denied(context: Context, error: Forbidden) -> NoReturn:
    """Refuse the current call with `error`, journaled under the principal's name."""
    call = _CALL.get()
    if call is None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
    await call.audit.deny(context, call.principal, call.rpc, str(error))
