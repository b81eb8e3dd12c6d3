"""Transport-independent parts of the sync and async clients.

Everything here is pure (no I/O), so both clients share one definition of
retry timing, channel options and request shapes.
"""

from __future__ import annotations

import ipaddress
import os
import random
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc

from execgw.client._convert import coerce_enum
from execgw.client.errors import rpc_error_code
from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

_JITTER = random.Random()

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.05
DEFAULT_MAX_BACKOFF = 1.0
MAX_CLIENT_ORDER_ID_LEN = 64
QUOTE_BATCH_SIZE = 100

_T = TypeVar("_T")

ChannelOptions: TypeAlias = Mapping[str, Any] | Sequence[tuple[str, Any]]
StatusLike: TypeAlias = orders_pb2.OrderStatus.ValueType | int | str

DEFAULT_CHANNEL_OPTIONS: dict[str, Any] = {
    # Find a dead gateway (host gone, NAT dropped the flow) within ~40s even while
    # a fill stream is quiet. The server must allow pings this often, or it will
    # answer with GOAWAY "too_many_pings".
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    # Without this, core stops pinging after two pings with no data, which is
    # exactly the quiet-stream case keepalive is for.
    "grpc.http2.max_pings_without_data": 0,
    # Core's defaults (1s first, 120s max) would leave a client idle for up to two
    # minutes after a gateway restart, failing every call with UNAVAILABLE.
    "grpc.initial_reconnect_backoff_ms": 250,
    "grpc.max_reconnect_backoff_ms": 5_000,
}


# A file path, or the PEM bytes themselves.
PemSource: TypeAlias = str | os.PathLike[str] | bytes
# What to trust: True for gRPC's default roots, or a CA bundle (httpx's `verify=`).
Verify: TypeAlias = bool | PemSource
# The client certificate chain and its private key, for mTLS (httpx's `cert=`).
ClientCert: TypeAlias = tuple[PemSource, PemSource]


_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _pem(name: str, source: PemSource, marker: bytes) -> bytes:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:  # OSError names the file
            data = f.read()
    else:
        raise TypeError(f"{name} must be a path or PEM bytes, not {type(source).__name__}")
    if marker not in data:
        where = "the bytes given" if isinstance(source, bytes) else os.fspath(source)
        what = "certificate" if marker == _CERTIFICATE else "private key"
        raise ValueError(f"{name}: {where} holds no PEM {what}")
    return data


def channel_credentials(
    *, tls: bool | None, verify: Verify | None, cert: ClientCert | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials for the channel, or None for plaintext.

    TLS is on when ``tls=True``, or when ``verify`` or ``cert`` is given; plaintext
    otherwise (a loopback gateway, `make run`). ``verify`` is what the gateway's
    certificate must chain to: True (or None) for gRPC's default roots (its bundled
    roots, or the file named by GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), else a CA bundle.
    ``cert`` is a (certificate chain, private key) pair for a gateway that requires
    client certificates. Files are read here, once, so a wrong path fails now.
    """
    if verify is False:
        raise ValueError(
            "verify=False is not supported: gRPC cannot skip checking the gateway's "
            "certificate; pass the CA bundle that signed it (verify='ca.pem')"
        )
    if tls is False and (verify is not None or cert is not None):
        raise ValueError("tls=False cannot be combined with verify= or cert=")
    if not (tls or verify is not None or cert is not None):
        return None
    roots = None if verify is None or verify is True else _pem("verify", verify, _CERTIFICATE)
    chain = key = None
    if cert is not None:
        if not isinstance(cert, tuple) or len(cert) != 2:
            raise TypeError("cert must be a (certificate chain, private key) pair")
        chain = _pem("cert[0]", cert[0], _CERTIFICATE)
        key = _pem("cert[1]", cert[1], b"PRIVATE KEY-----")
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def channel_options(extra: ChannelOptions | None) -> list[tuple[str, Any]]:
    """Defaults overlaid with the caller's options; the caller wins on a shared key."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    if extra is not None:
        merged.update(extra.items() if isinstance(extra, Mapping) else extra)
    return list(merged.items())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry a unary call and how long to wait first.

    Only UNAVAILABLE is retried by default: it means the call never reached the
    gateway's handler or the gateway asked to be called again. DEADLINE_EXCEEDED
    is opt-in because the gateway may have acted; that is still safe for every
    call here (submit reuses its client_order_id, the rest are reads or a
    cancel), but it multiplies the caller's worst-case latency by the attempts.
    """

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    retry_deadline_exceeded: bool = False
    # A generator of the library's own: a strategy that seeds the module-level `random`
    # for its own reproducibility keeps its sequence whatever the client retries.
    jitter: Callable[[], float] = field(default=_JITTER.random, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0")

    @property
    def codes(self) -> frozenset[grpc.StatusCode]:
        if self.retry_deadline_exceeded:
            return frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
        return frozenset({grpc.StatusCode.UNAVAILABLE})

    def should_retry(self, code: grpc.StatusCode, retries_done: int) -> bool:
        return retries_done < self.retries and code in self.codes

    def delay(self, retries_done: int) -> float:
        """Seconds to wait before retry number ``retries_done + 1``.

        "Equal jitter": half the exponential step is fixed and half random, so
        waits still grow attempt over attempt (until the cap) while clients that
        failed together do not retry in lockstep.
        """
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(retries_done, 60))
        return ceiling / 2 + ceiling / 2 * self.jitter()


AUTHORIZATION_KEY = "authorization"
Metadata: TypeAlias = tuple[tuple[str, str], ...]


def auth_metadata(auth: str | None) -> Metadata | None:
    """The metadata that carries the bearer token ``auth`` on every call; None without one.

    A bad token is refused here, without showing it: error messages end up in logs."""
    if auth is None:
        return None
    if not isinstance(auth, str) or not auth or not all("!" <= c <= "~" for c in auth):
        raise ValueError(
            "auth must be the bearer token: printable ASCII without spaces (not shown here)"
        )
    return ((AUTHORIZATION_KEY, f"Bearer {auth}"),)


def check_token_transport(target: str, auth: str | None, tls: bool) -> None:
    """A bearer token goes over TLS, or stays on this host: sent in plaintext across a
    network, anyone on the path could trade with it."""
    if auth is None or tls or _is_local_target(target):
        return
    raise ValueError(
        f"auth= would send the bearer token in plaintext to {target}: use TLS (tls=True, "
        "verify= or cert=), or a loopback or unix: target"
    )


def _is_local_target(target: str) -> bool:
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(prefix):
            target = target[len(prefix) :]
            break
    host = target.rpartition(":")[0] if target.count(":") == 1 or "]" in target else target
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"{name} must be > 0 seconds, got {timeout!r}")


def new_client_order_id() -> str:
    """A fresh idempotency key: 32 hex chars, unique without coordination."""
    return uuid.uuid4().hex


def client_order_id_or_new(client_order_id: str | None) -> str:
    if client_order_id is None:
        return new_client_order_id()
    if not isinstance(client_order_id, str) or not client_order_id:
        raise ValueError(f"client_order_id must be a non-empty string, got {client_order_id!r}")
    if len(client_order_id) > MAX_CLIENT_ORDER_ID_LEN:
        raise ValueError(
            f"client_order_id is {len(client_order_id)} chars; "
            f"at most {MAX_CLIENT_ORDER_ID_LEN} are allowed"
        )
    return client_order_id


def list_orders_request(
    strategy_code: str | None,
    status: StatusLike | None,
    symbol: str | None,
    page_size: int = 0,
    page_token: str = "",
) -> gateway_pb2.ListOrdersRequest:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 0:
        raise ValueError(
            f"page_size must be an int >= 0 (0: the gateway's default), not {page_size!r}"
        )
    return gateway_pb2.ListOrdersRequest(
        strategy_code=strategy_code or "",
        status=(
            orders_pb2.ORDER_STATUS_UNSPECIFIED
            if status is None
            else coerce_enum(orders_pb2.OrderStatus, status, "status", allow_unspecified=True)
        ),
        symbol=symbol or "",
        page_size=page_size,
        page_token=page_token,
    )


def stream_fills_request(
    strategy_codes: Iterable[str],
    symbols: Iterable[str],
    from_sequence: int,
    include_order_updates: bool,
    include_risk_events: bool = False,
) -> gateway_pb2.StreamFillsRequest:
    # A bare string is an Iterable[str] of characters: almost certainly a mistake.
    for name, value in (("strategy_codes", strategy_codes), ("symbols", symbols)):
        if isinstance(value, str):
            raise ValueError(f"{name} must be a collection of strings, not one string")
    if from_sequence < 0:
        raise ValueError(f"from_sequence must be >= 0, got {from_sequence}")
    return gateway_pb2.StreamFillsRequest(
        strategy_codes=list(strategy_codes),
        symbols=list(symbols),
        from_sequence=from_sequence,
        include_order_updates=include_order_updates,
        include_risk_events=include_risk_events,
    )


# Stream failures worth reconnecting after: the gateway went away, or cut this
# subscriber off for falling behind (it resumes from the journal).
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Trailer by which the gateway names the sequence to resume from.
RESUME_METADATA_KEY = "execgw-resume-from"
# Reconnects in a row after RESOURCE_EXHAUSTED without a resume point, with backoff,
# before the stream raises (at the default backoff, ~0.8-1.6 s of refusals).
MAX_CAPACITY_RECONNECTS = 5


def is_capacity_refusal(error: grpc.RpcError) -> bool:
    """RESOURCE_EXHAUSTED without a resume point: a limit, not a slow-consumer cut-off.

    Either a capacity limit (the gateway's calls or streams are all taken), which
    passes when other calls end, or an event over a message size limit, which fails
    every reconnect the same way. The two cannot be told apart by code, so both get a
    few reconnects and then raise.
    """
    if rpc_error_code(error) is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    trailing = getattr(error, "trailing_metadata", None)
    metadata = trailing() if callable(trailing) else None
    return not any(key == RESUME_METADATA_KEY for key, _ in metadata or ())


def should_reconnect(error: grpc.RpcError, capacity_refusals: int = 0) -> bool:
    """True for a stream failure that a reconnect can get past.

    RESOURCE_EXHAUSTED with a resume point is the gateway cutting off a subscriber that
    fell behind: always. Without one (see is_capacity_refusal) only while fewer than
    MAX_CAPACITY_RECONNECTS such refusals came in a row (`capacity_refusals`, counted by
    the caller and reset when the stream makes progress): a short burst of callers
    must not end a strategy's stream, and an event too big to send must not make it
    reconnect forever.
    """
    if is_capacity_refusal(error):
        return capacity_refusals < MAX_CAPACITY_RECONNECTS
    return rpc_error_code(error) in RECONNECT_CODES


class StreamCursor:
    """Where a fill stream got to, so a reconnect resumes right after it and no event
    is yielded twice.

    ``position`` is the last sequence accounted for: delivered, or covered by a
    heartbeat's head (everything up to it was sent or filtered out).
    """

    __slots__ = ("anchored", "last_sequence", "position", "request")

    def __init__(self, request: gateway_pb2.StreamFillsRequest) -> None:
        self.request = request
        self.last_sequence = 0
        self.position = request.from_sequence - 1 if request.from_sequence else 0
        # True once the gateway told us where we stand (a replay start, an event or a
        # heartbeat, even at head 0): from then on a reconnect must resume, not go live.
        self.anchored = bool(request.from_sequence)

    def is_new(self, event: orders_pb2.ExecutionEvent) -> bool:
        return event.sequence > self.position

    def delivered(self, event: orders_pb2.ExecutionEvent) -> None:
        self.last_sequence = event.sequence
        self.position = max(self.position, event.sequence)
        self.anchored = True

    def heartbeat(self, head_sequence: int) -> None:
        self.position = max(self.position, head_sequence)
        self.anchored = True

    def take(self, event: orders_pb2.ExecutionEvent, *, heartbeats: bool) -> bool:
        """Account for a received event; True when it should be yielded to the caller."""
        if event.HasField("heartbeat"):
            self.heartbeat(event.heartbeat.head_sequence)
            return heartbeats
        if not self.is_new(event):
            return False  # replayed after a reconnect: already yielded
        self.delivered(event)
        return True

    def resume_request(self) -> gateway_pb2.StreamFillsRequest:
        """The original request, replaying from the event after the last one accounted for."""
        request = gateway_pb2.StreamFillsRequest()
        request.CopyFrom(self.request)
        if self.anchored:
            request.from_sequence = self.position + 1
        return request


def quote_batch_size(quotes: object, batch_size: int | None) -> int:
    """Quotes per request.

    An in-memory collection is sent in batches of 100. Anything else may be a
    live feed, where waiting for 100 quotes would deliver stale prices, so each
    quote goes out as soon as it is produced.
    """
    if batch_size is None:
        return QUOTE_BATCH_SIZE if isinstance(quotes, Collection) else 1
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


class RequestErrors:
    """Keeps an exception raised by the caller's request iterator.

    gRPC swallows it and fails the call with a bare CANCELLED/UNKNOWN, hiding
    the caller's own bug; the clients re-raise the original instead.
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Exception | None = None

    def watch(self, requests: Iterator[_T]) -> Iterator[_T]:
        try:
            yield from requests
        except Exception as exc:
            self.error = exc
            raise

    async def awatch(self, requests: AsyncIterator[_T]) -> AsyncIterator[_T]:
        try:
            async for request in requests:
                yield request
        except Exception as exc:
            self.error = exc
            raise

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def quote_requests(
    quotes: Iterable[market_data_pb2.Quote], batch_size: int
) -> Iterator[market_data_pb2.PublishQuotesRequest]:
    batch: list[market_data_pb2.Quote] = []
    for quote in quotes:
        batch.append(quote)
        if len(batch) >= batch_size:
            yield market_data_pb2.PublishQuotesRequest(quotes=batch)
            batch = []
    if batch:
        yield market_data_pb2.PublishQuotesRequest(quotes=batch)


async def aquote_requests(
    quotes: Iterable[market_data_pb2.Quote] | AsyncIterable[market_data_pb2.Quote],
    batch_size: int,
) -> AsyncIterator[market_data_pb2.PublishQuotesRequest]:
    if not isinstance(quotes, AsyncIterable):
        for request in quote_requests(quotes, batch_size):
            yield request
        return
    batch: list[market_data_pb2.Quote] = []
    async for quote in quotes:
        batch.append(quote)
        if len(batch) >= batch_size:
            yield market_data_pb2.PublishQuotesRequest(quotes=batch)
            batch = []
    if batch:
        yield market_data_pb2.PublishQuotesRequest(quotes=batch)


# One order of a submit_orders stream: the intent and its client_order_id (None: one is
# generated, as submit does).
OrderToSubmit = tuple[orders_pb2.OrderIntent, str | None]


def submit_orders_request(order: OrderToSubmit) -> gateway_pb2.SubmitOrdersRequest:
    intent, client_order_id = order
    return gateway_pb2.SubmitOrdersRequest(
        intent=intent, client_order_id=client_order_id_or_new(client_order_id)
    )
