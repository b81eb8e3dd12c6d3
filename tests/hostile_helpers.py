"""Hostile-input suite helpers: the caps it assumes, the attacker, the honest trader,
the oracles and the checks over answers and the journal (issue 8).

The attacker sends every RPC of both services through raw execgw.v1 stubs, or as raw
bytes, on a channel of its own. An honest strategy (the real ExecutionClient with its
retries) trades in a thread at the same time, and an honest StreamFills subscriber
follows every event. Nothing here raises on a broken invariant: each one is recorded
in `Violations`, so a run reports every kind of breakage it found, with an example.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from execgw.client import ExecgwError, ExecutionClient, ExecutionResult
from execgw.server.domain import OrderIntent as DomainIntent
from execgw.server.events import OrderAccepted, OrderRejected
from execgw.server.journal import Journal, JournalError
from execgw.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
    orders_pb2,
)

if TYPE_CHECKING:
    from tests.e2e_helpers import TIMEOUT_S
else:
    from e2e_helpers import TIMEOUT_S

# ---------------------------------------------------------------------------------------
# The caps. Issue 8 says "documented caps"; where the fixers have not settled a number
# yet, the value below follows the wording. Adjust here to match the
# implementation: the hostile values are derived from these (cap + 1, 10 x cap, MBs),
# so a changed cap keeps the attack just over it.
# ---------------------------------------------------------------------------------------
# "Symbol: EXCHANGE:TRADINGSYMBOL, matched in full" (fullmatch: no trailing newline).
SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9_]*:[A-Za-z0-9&_.\-]+")
SYMBOL_MAX_LEN = 64
# "strategy_code: a short identifier".
STRATEGY_CODE_MAX_LEN = 64
# "reason: a few hundred characters" (OrderIntent.reason, HaltTrading/ResumeTrading.reason).
REASON_MAX_LEN = 512
# Kite's tag limit, as documented in orders.proto today.
TAG_MAX_LEN = 20
# "client_order_id: as today": at most 64 printable ASCII characters, no spaces.
CLIENT_ORDER_ID_MAX_LEN = 64
CLIENT_ORDER_ID_RE = re.compile(r"[\x21-\x7e]*")
# Halt/resume actor as journaled (the issue wants it from the principal; either way short).
ACTOR_MAX_LEN = 128
# "metadata: a few KiB, a bounded number of keys, a bounded depth".
METADATA_MAX_BYTES = 4 * 1024  # serialized size (Struct bytes on the wire, JSON in the journal)
METADATA_MAX_KEYS = 64  # keys at every level together
METADATA_MAX_DEPTH = 8  # a flat Struct is depth 1; each nested Struct or list adds one
# "Validation bounds every numeric field: finite, positive where it must be, and at most
# a documented ceiling." Prices (limit, trigger, quote ltp/bid/ask) in rupees:
PRICE_CEILING = Decimal(1_000_000_000)
QTY_CEILING = 1_000_000_000
# Sanity bound for any other journaled or reported amount (PnL, equity, notional).
MONEY_CEILING = Decimal(10) ** 15
# Tick of every symbol in these tests (make_config loads no instrument dump).
TICK = Decimal("0.05")
# "No control characters anywhere": Unicode category Cc (C0, DEL, C1).
CONTROL_CATEGORIES = frozenset({"Cc"})
# Any other journaled text (messages; a cancel message may quote a halt reason).
JOURNAL_TEXT_MAX_LEN = 2 * REASON_MAX_LEN + 256
# No journal row body larger than this.
JOURNAL_ROW_MAX_BYTES = 64 * 1024
# What a default gRPC client accepts; no response or stream event may be larger.
CLIENT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024
# A status message names the field; it does not echo megabytes back.
STATUS_MESSAGE_MAX_LEN = 1024

# Status codes a hostile request may get. Never UNKNOWN, INTERNAL or UNAVAILABLE.
UNARY_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
STREAM_CODES = UNARY_CODES | {grpc.StatusCode.OUT_OF_RANGE}

# A status message must not name an internal class, file or path.
LEAK_PATTERNS = (
    re.compile(r"<class"),
    re.compile(r"Traceback"),
    re.compile(r"File \""),
    re.compile(r"\.py\b"),
    re.compile(r"/work/|/tmp/|/home/|/usr/|/opt/|site-packages"),
    re.compile(r"\b[A-Z][A-Za-z0-9]*(?:Error|Exception)\b"),
    re.compile(r"\bInvalidOperation\b|\bdecimal\."),
)

# Guards against a hang; never a way to wait for something.
ATTACK_TIMEOUT_S = TIMEOUT_S
STREAM_READ_LIMIT = 300

# Bounded, deterministic, no shrinking: violations are collected, not raised, so a run
# explores every example and reports everything it found.
HOSTILE_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)

# ---------------------------------------------------------------------------------------
# Symbols and participants
# ---------------------------------------------------------------------------------------
INFY = "NSE:INFY"
KNOWN_SYMBOLS = (INFY, "NSE:TCS", "NSE:SBIN")
BASE_PRICE = 1500.0
HONEST_CODE = "honest"
ATTACKER_CODES = ("atk", "atk-2", "mallory")
GATEWAY_SERVICE = "execgw.v1.ExecutionGateway"
MARKET_SERVICE = "execgw.v1.MarketData"


@dataclass(frozen=True)
class RpcSpec:
    name: str
    service: str
    kind: str  # unary | server_stream | client_stream
    request: type[Message]
    response: type[Message]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


RPCS: dict[str, RpcSpec] = {
    spec.name: spec
    for spec in (
        RpcSpec(
            "SubmitOrder",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.SubmitOrderRequest,
            gateway_pb2.SubmitOrderResponse,
        ),
        RpcSpec(
            "CancelOrder",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.CancelOrderRequest,
            gateway_pb2.CancelOrderResponse,
        ),
        RpcSpec(
            "GetOrder",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.GetOrderRequest,
            gateway_pb2.GetOrderResponse,
        ),
        RpcSpec(
            "ListOrders",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.ListOrdersRequest,
            gateway_pb2.ListOrdersResponse,
        ),
        RpcSpec(
            "GetPositions",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.GetPositionsRequest,
            gateway_pb2.GetPositionsResponse,
        ),
        RpcSpec(
            "StreamFills",
            GATEWAY_SERVICE,
            "server_stream",
            gateway_pb2.StreamFillsRequest,
            gateway_pb2.StreamFillsResponse,
        ),
        RpcSpec(
            "GetRiskState",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.GetRiskStateRequest,
            gateway_pb2.GetRiskStateResponse,
        ),
        RpcSpec(
            "HaltTrading",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.HaltTradingRequest,
            gateway_pb2.HaltTradingResponse,
        ),
        RpcSpec(
            "ResumeTrading",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.ResumeTradingRequest,
            gateway_pb2.ResumeTradingResponse,
        ),
        RpcSpec(
            "PreviewOrder",
            GATEWAY_SERVICE,
            "unary",
            gateway_pb2.PreviewOrderRequest,
            gateway_pb2.PreviewOrderResponse,
        ),
        RpcSpec(
            "PublishQuotes",
            MARKET_SERVICE,
            "client_stream",
            market_data_pb2.PublishQuotesRequest,
            market_data_pb2.PublishQuotesResponse,
        ),
        RpcSpec(
            "GetQuote",
            MARKET_SERVICE,
            "unary",
            market_data_pb2.GetQuoteRequest,
            market_data_pb2.GetQuoteResponse,
        ),
    )
}


# ---------------------------------------------------------------------------------------
# Violations
# ---------------------------------------------------------------------------------------
class Violations:
    """Broken invariants by category, with a count and the first few examples of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, category: str, example: str) -> None:
        with self._lock:
            self.counts[category] += 1
            examples = self.examples.setdefault(category, [])
            if len(examples) < 2:
                examples.append(_clip(example, 400))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def report(self) -> str:
        lines = [f"{sum(self.counts.values())} invariant violations in {len(self.counts)} kinds:"]
        for category in sorted(self.counts):
            lines.append(f"- [{self.counts[category]}x] {category}")
            lines.extend(f"      e.g. {example}" for example in self.examples[category])
        return "\n".join(lines)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


def show(value: object, limit: int = 60) -> str:
    """A short repr of a possibly huge value, for violation examples."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}...(len {len(value)})"
    if isinstance(value, Message):
        text = _clip(text_format.MessageToString(value, as_one_line=True, as_utf8=True), limit * 5)
        return f"<{type(value).__name__} {value.ByteSize()} bytes: {text}>"
    if isinstance(value, list) and value and isinstance(value[0], Message):
        return "[" + ", ".join(show(item, limit) for item in value) + "]"
    return _clip(repr(value), limit * 2)


# ---------------------------------------------------------------------------------------
# Oracles: what the issue says must be refused with INVALID_ARGUMENT
# ---------------------------------------------------------------------------------------
def has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in text)


def symbol_ok(symbol: str) -> bool:
    return len(symbol) <= SYMBOL_MAX_LEN and SYMBOL_RE.fullmatch(symbol) is not None


def text_ok(text: str, max_len: int) -> bool:
    return len(text) <= max_len and not has_control(text)


def client_order_id_ok(client_order_id: str) -> bool:
    return (
        len(client_order_id) <= CLIENT_ORDER_ID_MAX_LEN
        and CLIENT_ORDER_ID_RE.fullmatch(client_order_id) is not None
    )


def price_ok(value: float | Decimal, *, allow_zero: bool = False) -> bool:
    exact = Decimal(repr(value)) if isinstance(value, float) else value
    if not exact.is_finite() or exact > PRICE_CEILING:
        return False
    return exact >= 0 if allow_zero else exact > 0


def on_tick(value: float) -> bool:
    exact = Decimal(repr(value))
    if not exact.is_finite():
        return False
    nearest = (exact / TICK).to_integral_value() * TICK
    if exact != 0 and nearest == 0:
        return False  # 5e-324 is not "the tick 0"
    return abs(exact - nearest) <= TICK * Decimal("1e-6")


def _struct_shape(value: struct_pb2.Value | struct_pb2.Struct, depth: int) -> tuple[int, int, bool]:
    """(depth, keys, bad) of a Struct or Value; bad: a control character or non-finite."""
    if isinstance(value, struct_pb2.Struct):
        deepest, keys, bad = depth, len(value.fields), False
        for key, item in value.fields.items():
            d, k, b = _struct_shape(item, depth)
            deepest, keys, bad = max(deepest, d), keys + k, bad or b or has_control(key)
        return deepest, keys, bad
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _struct_shape(value.struct_value, depth + 1)
    if kind == "list_value":
        deepest, keys, bad = depth + 1, 0, False
        for item in value.list_value.values:
            d, k, b = _struct_shape(item, depth + 1)
            deepest, keys, bad = max(deepest, d), keys + k, bad or b
        return deepest, keys, bad
    if kind == "number_value":
        return depth, 0, not math.isfinite(value.number_value)
    if kind == "string_value":
        return depth, 0, has_control(value.string_value)
    return depth, 0, False


def metadata_problem(metadata: struct_pb2.Struct) -> str | None:
    depth, keys, bad = _struct_shape(metadata, 1)
    if metadata.ByteSize() > METADATA_MAX_BYTES:
        return f"{metadata.ByteSize()} bytes"
    if keys > METADATA_MAX_KEYS:
        return f"{keys} keys"
    if depth > METADATA_MAX_DEPTH:
        return f"depth {depth}"
    if bad:
        return "control character or non-finite number"
    return None


_SIDES = frozenset({orders_pb2.SIDE_BUY, orders_pb2.SIDE_SELL})
_ORDER_TYPES = frozenset(
    {
        orders_pb2.ORDER_TYPE_MARKET,
        orders_pb2.ORDER_TYPE_LIMIT,
        orders_pb2.ORDER_TYPE_SL,
        orders_pb2.ORDER_TYPE_SL_M,
    }
)
_PRODUCTS = frozenset({orders_pb2.PRODUCT_MIS, orders_pb2.PRODUCT_NRML, orders_pb2.PRODUCT_CNC})
_VALIDITIES = frozenset({orders_pb2.VALIDITY_DAY, orders_pb2.VALIDITY_IOC})
_STATUSES = frozenset(orders_pb2.OrderStatus.values())


def intent_problems(intent: orders_pb2.OrderIntent) -> list[tuple[str, object]]:
    """Fields of an intent that the issue says must be refused, with their values."""
    problems: list[tuple[str, object]] = []
    if not symbol_ok(intent.symbol):
        problems.append(("intent.symbol", intent.symbol))
    code = intent.strategy_code
    if not code.strip() or not text_ok(code, STRATEGY_CODE_MAX_LEN):
        problems.append(("intent.strategy_code", code))
    for name, allowed in (
        ("side", _SIDES),
        ("order_type", _ORDER_TYPES),
        ("product", _PRODUCTS),
        ("validity", _VALIDITIES),
    ):
        if getattr(intent, name) not in allowed:
            problems.append((f"intent.{name}", getattr(intent, name)))
    if not 0 < intent.qty <= QTY_CEILING:
        problems.append(("intent.qty", intent.qty))
    if intent.HasField("price") and not price_ok(intent.price):
        problems.append(("intent.price", intent.price))
    if intent.HasField("trigger_price") and not price_ok(intent.trigger_price):
        problems.append(("intent.trigger_price", intent.trigger_price))
    if not text_ok(intent.tag, TAG_MAX_LEN):
        problems.append(("intent.tag", intent.tag))
    if not text_ok(intent.reason, REASON_MAX_LEN):
        problems.append(("intent.reason", intent.reason))
    if intent.HasField("confidence") and not 0.0 <= intent.confidence <= 1.0:
        problems.append(("intent.confidence", intent.confidence))
    if intent.HasField("metadata"):
        problem = metadata_problem(intent.metadata)
        if problem is not None:
            problems.append(("intent.metadata", problem))
    return problems


def quote_problems(quote: market_data_pb2.Quote, index: int) -> list[tuple[str, object]]:
    prefix = f"quotes[{index}]."
    problems: list[tuple[str, object]] = []
    if not symbol_ok(quote.symbol):
        problems.append((prefix + "symbol", quote.symbol))
    if not price_ok(quote.ltp) or not on_tick(quote.ltp):
        problems.append((prefix + "ltp", quote.ltp))
    for name in ("bid", "ask"):
        value = getattr(quote, name)
        if not price_ok(value, allow_zero=True) or not on_tick(value):
            problems.append((prefix + name, value))
    if quote.bid > 0 and quote.ask > 0 and quote.bid > quote.ask:
        problems.append((prefix + "bid", f"bid {quote.bid} > ask {quote.ask}"))
    for name in ("bid_qty", "ask_qty", "volume"):
        if getattr(quote, name) < 0:
            problems.append((prefix + name, getattr(quote, name)))
    if quote.HasField("timestamp"):
        ts = quote.timestamp
        # google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
        if not (-62_135_596_800 <= ts.seconds <= 253_402_300_799 and 0 <= ts.nanos < 10**9):
            problems.append((prefix + "timestamp", (ts.seconds, ts.nanos)))
    return problems


def expected_invalid(rpc: str, requests: list[Message]) -> list[tuple[str, object]]:
    """What in these requests the issue says must get INVALID_ARGUMENT (never OK)."""
    request = requests[0]
    if isinstance(request, gateway_pb2.SubmitOrderRequest | gateway_pb2.PreviewOrderRequest):
        problems: list[tuple[str, object]] = (
            intent_problems(request.intent)
            if request.HasField("intent")
            else [("intent", "missing")]
        )
        if isinstance(request, gateway_pb2.SubmitOrderRequest) and not client_order_id_ok(
            request.client_order_id
        ):
            problems.append(("client_order_id", request.client_order_id))
        return problems
    if isinstance(request, gateway_pb2.ListOrdersRequest):
        return [] if request.status in _STATUSES else [("status", request.status)]
    if isinstance(request, gateway_pb2.HaltTradingRequest | gateway_pb2.ResumeTradingRequest):
        halt_problems: list[tuple[str, object]] = []
        if not text_ok(request.reason, REASON_MAX_LEN):
            halt_problems.append(("reason", request.reason))
        if not text_ok(request.strategy_code, STRATEGY_CODE_MAX_LEN):
            halt_problems.append(("strategy_code", request.strategy_code))
        return halt_problems
    if isinstance(request, market_data_pb2.PublishQuotesRequest):
        quotes = [q for r in requests for q in r.quotes]  # type: ignore[attr-defined]
        return [p for i, q in enumerate(quotes) for p in quote_problems(q, i)]
    return []


# ---------------------------------------------------------------------------------------
# Checks on answers
# ---------------------------------------------------------------------------------------
POSITIVE_PRICE_FIELDS = frozenset(
    {
        ("ExecutionResult", "price"),
        ("ExecutionResult", "trigger_price"),
        ("ExecutionResult", "avg_price"),
        ("Fill", "price"),
        ("Quote", "ltp"),
        ("Position", "last_price"),
    }
)
NON_NEGATIVE_PRICE_FIELDS = frozenset(
    {("Quote", "bid"), ("Quote", "ask"), ("Position", "avg_price")}
)


def message_strings(message: Message) -> list[str]:
    """Every string value in a message, to tell an echo of the request from a leak."""
    found: list[str] = []
    for field, value in message.ListFields():
        items: Iterable[Any]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = [*value.keys(), *value.values()]
        elif field.is_repeated:
            items = value
        else:
            items = [value]
        for item in items:
            if isinstance(item, str):
                found.append(item)
            elif isinstance(item, Message):
                found.extend(message_strings(item))
    return found


def leaks(details: str, echoed: Iterable[str]) -> list[str]:
    """Leak patterns found in a status message, ignoring text the request itself sent."""
    text = details
    for value in sorted({s for s in echoed if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(repr(value)[1:-1], "").replace(value, "")
    return [p.pattern for p in LEAK_PATTERNS if p.search(text)]


def check_response_message(rpc: str, message: Message, violations: Violations) -> None:
    """Every number a response carries is finite, and prices are within the ceiling."""
    for field, value in message.ListFields():
        items: Iterable[Any]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = value.values()
        elif field.is_repeated:
            items = value
        else:
            items = [value]
        where = f"{message.DESCRIPTOR.name}.{field.name}"
        key = (message.DESCRIPTOR.name, field.name)
        for item in items:
            if isinstance(item, Message):
                check_response_message(rpc, item, violations)
            elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
                if not math.isfinite(item):
                    violations.add(f"{rpc}: response carries a non-finite {where}", repr(item))
                elif key in POSITIVE_PRICE_FIELDS and not price_ok(item):
                    violations.add(f"{rpc}: response {where} not in (0, ceiling]", repr(item))
                elif key in NON_NEGATIVE_PRICE_FIELDS and not price_ok(item, allow_zero=True):
                    violations.add(f"{rpc}: response {where} not in [0, ceiling]", repr(item))
                elif abs(Decimal(repr(item))) > MONEY_CEILING:
                    violations.add(f"{rpc}: response {where} beyond any sane amount", repr(item))


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[Message]


def rpc_status(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, grpc.Call):
        return error.code(), error.details() or ""
    return grpc.StatusCode.UNKNOWN, repr(error)


def check_outcome(
    rpc: str,
    outcome: Outcome,
    *,
    requests: list[Message] | None,
    request_size: int,
    violations: Violations,
) -> None:
    """The invariants every answer to a hostile call must hold.

    `requests` is None when the body did not parse as the method's request type (raw
    bytes): then the only acceptable answers are INVALID_ARGUMENT, or RESOURCE_EXHAUSTED
    for a body over the server's receive limit.
    """
    code, details = outcome.code, outcome.details
    spec = RPCS[rpc]
    allowed = STREAM_CODES if spec.kind == "server_stream" else UNARY_CODES
    where = rpc if requests is not None else f"{rpc} (raw bytes)"
    sent = [s for r in requests or [] for s in message_strings(r)]

    def example() -> str:
        return f"{show(requests)} -> {code.name}: {show(details, 160)}"

    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        violations.add(f"{where}: no answer within {ATTACK_TIMEOUT_S}s", example())
        return
    if code not in allowed:
        violations.add(f"{where}: status {code.name}", example())
    if code != grpc.StatusCode.OK:
        if len(details) > STATUS_MESSAGE_MAX_LEN:
            violations.add(
                f"{where}: status message longer than {STATUS_MESSAGE_MAX_LEN} characters",
                f"{code.name}, {len(details)} characters: {show(details)}",
            )
        found = leaks(details, sent)
        if found:
            violations.add(f"{where}: status message names internals {found}", example())
        if "larger than max" in details and request_size <= CLIENT_MAX_RECEIVE_BYTES:
            violations.add(
                f"{where}: an answer larger than a default client accepts "
                f"({CLIENT_MAX_RECEIVE_BYTES} bytes)",
                example(),
            )
        if "metadata size exceeds" in details:
            violations.add(
                f"{where}: a status (trailers) larger than a default client accepts", example()
            )
    if requests is None:
        if code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            violations.add(f"{where}: an undecodable request got {code.name}", example())
        return
    problems = expected_invalid(rpc, requests)
    if problems and code == grpc.StatusCode.OK:
        for name, value in problems:
            field = re.sub(r"\[\d+\]", "[]", name)
            violations.add(f"{rpc}: accepted an invalid {field}", f"{name}={show(value)}")
    if code == grpc.StatusCode.INVALID_ARGUMENT and requests:
        if rpc == "PublishQuotes":
            if not re.search(r"quotes\[\d+\]", details):
                violations.add(
                    f"{rpc}: INVALID_ARGUMENT does not name the quote's index", example()
                )
        elif not _names_a_field(requests[0], details):
            violations.add(f"{rpc}: INVALID_ARGUMENT does not name a field", example())
    for response in outcome.responses:
        check_response_message(rpc, response, violations)
        _check_specific(rpc, requests[0], response, violations)


def _field_names(descriptor: Any, seen: set[str] | None = None) -> set[str]:
    names = seen if seen is not None else set()
    for field in descriptor.fields:
        if field.name not in names:
            names.add(field.name)
            if field.message_type is not None and not field.message_type.full_name.startswith(
                "google.protobuf"
            ):
                _field_names(field.message_type, names)
    return names


def _names_a_field(request: Message, details: str) -> bool:
    return any(re.search(rf"\b{name}\b", details) for name in _field_names(request.DESCRIPTOR))


def _check_specific(rpc: str, request: Message, response: Message, violations: Violations) -> None:
    if (
        isinstance(request, gateway_pb2.ListOrdersRequest)
        and isinstance(response, gateway_pb2.ListOrdersResponse)
        and request.status != orders_pb2.ORDER_STATUS_UNSPECIFIED
    ):
        wrong = [r.status for r in response.results if r.status != request.status]
        if wrong:
            violations.add(
                f"{rpc}: status filter {request.status} returned other statuses",
                f"{len(wrong)} results, e.g. status {wrong[0]}",
            )
    if isinstance(response, market_data_pb2.PublishQuotesResponse) and response.accepted < 0:
        violations.add(f"{rpc}: negative accepted count", repr(response.accepted))


# ---------------------------------------------------------------------------------------
# The attacker
# ---------------------------------------------------------------------------------------
class Attacker:
    """Hostile calls on a channel of its own, through raw stubs or as raw bytes."""

    def __init__(self, target: str, violations: Violations) -> None:
        self.violations = violations
        self.calls: Counter[str] = Counter()
        self._channel = grpc.insecure_channel(target)
        self._gateway = gateway_pb2_grpc.ExecutionGatewayStub(self._channel)
        self._market = market_data_pb2_grpc.MarketDataStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _stub_method(self, rpc: str) -> Any:
        stub: Any = self._market if RPCS[rpc].service == MARKET_SERVICE else self._gateway
        return getattr(stub, rpc)

    # -- typed requests -----------------------------------------------------------

    def send(self, rpc: str, case: Message | list[Message]) -> None:
        """Send one hypothesis case (a request, or a list of them for PublishQuotes)."""
        requests = case if isinstance(case, list) else [case]
        first = requests[0]
        if isinstance(first, gateway_pb2.SubmitOrderRequest) and (
            first.client_order_id == FRESH_COID
        ):
            fresh = gateway_pb2.SubmitOrderRequest()
            fresh.CopyFrom(first)
            fresh.client_order_id = uuid.uuid4().hex
            requests = [fresh]
        size = sum(r.ByteSize() for r in requests)
        kind = RPCS[rpc].kind
        self.calls[rpc] += 1
        if kind == "unary":
            outcome = self._unary(
                lambda: self._stub_method(rpc)(requests[0], timeout=ATTACK_TIMEOUT_S)
            )
        elif kind == "server_stream":
            outcome = self._server_stream(
                lambda: self._stub_method(rpc)(requests[0], timeout=ATTACK_TIMEOUT_S), None
            )
        else:
            outcome = self._unary(
                lambda: self._stub_method(rpc)(iter(requests), timeout=ATTACK_TIMEOUT_S)
            )
        check_outcome(
            rpc, outcome, requests=requests, request_size=size, violations=self.violations
        )

    # -- raw bytes ----------------------------------------------------------------

    def send_raw(self, rpc: str, payloads: list[bytes]) -> None:
        """Send bytes as the request body; check as typed if they parse, else as garbage."""
        spec = RPCS[rpc]
        self.calls[f"{rpc} (raw)"] += 1
        parsed: list[Message] | None = []
        for payload in payloads if spec.kind == "client_stream" else payloads[:1]:
            try:
                parsed.append(spec.request.FromString(payload))  # type: ignore[union-attr]
            except DecodeError:
                parsed = None
                break
        if parsed == []:
            parsed = None
        size = sum(len(p) for p in payloads)
        if spec.kind == "unary":
            call: Any = self._channel.unary_unary(spec.path)
            outcome = self._unary(lambda: call(payloads[0], timeout=ATTACK_TIMEOUT_S))
        elif spec.kind == "server_stream":
            stream: Any = self._channel.unary_stream(spec.path)
            outcome = self._server_stream(
                lambda: stream(payloads[0], timeout=ATTACK_TIMEOUT_S), spec.response
            )
        else:
            upload: Any = self._channel.stream_unary(spec.path)
            outcome = self._unary(lambda: upload(iter(payloads), timeout=ATTACK_TIMEOUT_S))
        if outcome.code == grpc.StatusCode.OK and spec.kind != "server_stream":
            outcome.responses = [self._parse_response(rpc, spec, r) for r in outcome.responses]
        check_outcome(rpc, outcome, requests=parsed, request_size=size, violations=self.violations)

    def _parse_response(self, rpc: str, spec: RpcSpec, raw: Any) -> Message:
        try:
            return spec.response.FromString(raw)
        except DecodeError:
            self.violations.add(f"{rpc} (raw bytes): the response does not parse", show(raw))
            return spec.response()

    # -- transport ----------------------------------------------------------------

    @staticmethod
    def _unary(call: Callable[[], Any]) -> Outcome:
        try:
            response = call()
        except grpc.RpcError as e:
            code, details = rpc_status(e)
            return Outcome(code, details, [])
        return Outcome(grpc.StatusCode.OK, "", [response])

    @staticmethod
    def _server_stream(start: Callable[[], Any], parse: type[Message] | None) -> Outcome:
        """Read until the stream goes live (its first heartbeat), then leave."""
        call = start()
        responses: list[Message] = []
        try:
            for item in call:
                response: Any = parse.FromString(item) if parse is not None else item
                responses.append(response)
                event = response.event
                if (
                    event.WhichOneof("payload") == "heartbeat"
                    or len(responses) >= STREAM_READ_LIMIT
                ):
                    break
        except grpc.RpcError as e:
            code, details = rpc_status(e)
            return Outcome(code, details, responses)
        except DecodeError as e:
            return Outcome(grpc.StatusCode.UNKNOWN, f"response does not parse: {e}", responses)
        finally:
            call.cancel()
        return Outcome(grpc.StatusCode.OK, "", responses)


# ---------------------------------------------------------------------------------------
# The honest side
# ---------------------------------------------------------------------------------------
def _market(side: int) -> orders_pb2.OrderIntent:
    return orders_pb2.OrderIntent(
        symbol=INFY,
        strategy_code=HONEST_CODE,
        side=side,  # type: ignore[arg-type]
        qty=1,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        product=orders_pb2.PRODUCT_MIS,
        validity=orders_pb2.VALIDITY_DAY,
        reason="honest rebalance",
    )


def _limit(side: int, price: float) -> orders_pb2.OrderIntent:
    intent = _market(side)
    intent.order_type = orders_pb2.ORDER_TYPE_LIMIT
    intent.price = price
    return intent


HONEST_INTENTS = (
    _market(orders_pb2.SIDE_BUY),
    _market(orders_pb2.SIDE_SELL),
    _limit(orders_pb2.SIDE_BUY, 1490.0),
    _limit(orders_pb2.SIDE_SELL, 1510.0),
)


class HonestTrader:
    """A strategy as it really trades: the ExecutionClient with its retries.

    Every submit has a fresh client_order_id; a result of any status (PLACED, FILLED,
    REJECTED for a risk reason) is a success, an exception is a failure. It also reads
    its own order and positions now and then; a failed read is a failure too.
    """

    def __init__(self, target: str, *, min_orders: int = 20, max_orders: int = 10_000) -> None:
        self.client = ExecutionClient(target, timeout=TIMEOUT_S)
        self.min_orders = min_orders
        self.max_orders = max_orders
        self.results: dict[str, ExecutionResult] = {}
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []
        self.submitted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="honest-trader", daemon=True)

    def submit_one(self) -> ExecutionResult | None:
        intent = HONEST_INTENTS[self.submitted % len(HONEST_INTENTS)]
        client_order_id = uuid.uuid4().hex
        self.submitted += 1
        try:
            result = self.client.submit(intent, client_order_id)
        except ExecgwError as e:
            self.failures.append(f"submit {client_order_id}: {e!r}")
            return None
        self.results[client_order_id] = result
        self.statuses[orders_pb2.OrderStatus.Name(result.status)] += 1
        return result

    def read_back(self, result: ExecutionResult) -> None:
        try:
            self.client.get_order(result.order_id)
            self.client.positions(HONEST_CODE)
        except ExecgwError as e:
            self.failures.append(f"read {result.order_id}: {e!r}")

    def run(self) -> None:
        while self.submitted < self.max_orders and not (
            self._stop.is_set() and self.submitted >= self.min_orders
        ):
            result = self.submit_one()
            if result is not None and self.submitted % 4 == 0:
                self.read_back(result)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is None:
            return  # never started
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the honest trader did not finish"

    def close(self) -> None:
        self.client.close()

    def summary(self) -> str:
        return (
            f"honest: {self.submitted} submits, {len(self.failures)} failures, "
            f"statuses {dict(self.statuses)}"
        )


def health_serving(target: str) -> str:
    """The server's overall health status, by name (SERVING when all is well)."""
    channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    except grpc.RpcError as e:
        code, details = rpc_status(e)
        return f"{code.name}: {details}"
    finally:
        channel.close()


# ---------------------------------------------------------------------------------------
# The journal after the run
# ---------------------------------------------------------------------------------------
_POSITIVE_PRICES = frozenset(
    {"price", "trigger_price", "ltp", "trigger_ltp", "last_price", "mark", "mark_price"}
)
_BOOK_PRICES = frozenset({"bid", "ask"})
_COUNTS = frozenset({"filled_qty", "bid_qty", "ask_qty", "volume"})


class JournalAudit:
    """Walks every journaled event and after-image and checks every value against the caps."""

    def __init__(self, path: Path, violations: Violations) -> None:
        self.path = path
        self.violations = violations
        self.rows = 0
        self.largest_row = 0
        # client_order_id -> order ids journaled as accepted or rejected for it
        self.placements: dict[str, list[str]] = {}

    def run(self) -> None:
        try:
            journal = Journal(self.path, read_only=True)
        except JournalError as e:
            self.violations.add("journal: cannot be opened read-only", str(e))
            return
        try:
            for row in journal.rows():
                self.rows += 1
                size = len(row.body.encode("utf-8"))
                self.largest_row = max(self.largest_row, size)
                if size > JOURNAL_ROW_MAX_BYTES:
                    self.violations.add(
                        f"journal: {row.kind} row body larger than {JOURNAL_ROW_MAX_BYTES} bytes",
                        f"sequence {row.sequence}: {size} bytes",
                    )
                try:
                    record = row.decode()
                except JournalError as e:
                    self.violations.add(f"journal: {row.kind} row cannot be decoded", str(e))
                    continue
                event = record.event
                if isinstance(event, OrderAccepted | OrderRejected):
                    self.placements.setdefault(event.client_order_id, []).append(event.order_id)
                kind = type(event).__name__
                self._walk(event, kind, kind, row.sequence)
                if record.order is not None:
                    self._walk(record.order, f"{kind}(order)", "order", row.sequence)
        finally:
            journal.close()

    def _bad(self, path: str, problem: str, sequence: int, value: object) -> None:
        self.violations.add(f"journal: {path} {problem}", f"sequence {sequence}: {show(value)}")

    def _walk(self, value: object, path: str, leaf: str, seq: int) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                self._walk(getattr(value, f.name), f"{path}.{f.name}", f.name, seq)
            if isinstance(value, DomainIntent) and not value.strategy_code.strip():
                self._bad(f"{path}.strategy_code", "is empty", seq, value.strategy_code)
            if type(value).__name__ == "Quote":
                bid, ask = getattr(value, "bid", 0), getattr(value, "ask", 0)
                if bid > 0 and ask > 0 and bid > ask:
                    self._bad(path, "has bid > ask", seq, (bid, ask))
            return
        if value is None or isinstance(value, bool | Enum | datetime | date):
            return
        if isinstance(value, str):
            self._string(value, path, leaf, seq)
        elif isinstance(value, Decimal | float):
            self._number(
                Decimal(repr(value)) if isinstance(value, float) else value, path, leaf, seq
            )
        elif isinstance(value, int):
            if leaf == "qty" and not 0 < value <= QTY_CEILING:
                self._bad(path, f"not in (0, {QTY_CEILING}]", seq, value)
            elif leaf in _COUNTS and value < 0:
                self._bad(path, "is negative", seq, value)
        elif isinstance(value, dict):
            if leaf == "metadata":
                self._metadata(value, path, seq)
            for key, item in value.items():
                self._string(str(key), f"{path}{{key}}", "key", seq)
                self._walk(item, f"{path}{{}}", "value", seq)
        elif isinstance(value, list | tuple):
            for item in value:
                self._walk(item, f"{path}[]", leaf, seq)

    def _string(self, value: str, path: str, leaf: str, seq: int) -> None:
        if has_control(value):
            self._bad(path, "has control characters", seq, value)
        limits = {
            "strategy_code": STRATEGY_CODE_MAX_LEN,
            "reason": REASON_MAX_LEN,
            "tag": TAG_MAX_LEN,
            "actor": ACTOR_MAX_LEN,
            "client_order_id": CLIENT_ORDER_ID_MAX_LEN,
        }
        if leaf == "symbol" and not symbol_ok(value):
            self._bad(path, "is not a valid EXCHANGE:TRADINGSYMBOL", seq, value)
        elif leaf == "client_order_id" and not client_order_id_ok(value):
            self._bad(path, "is not <= 64 printable ASCII", seq, value)
        elif len(value) > limits.get(leaf, JOURNAL_TEXT_MAX_LEN):
            self._bad(path, f"longer than {limits.get(leaf, JOURNAL_TEXT_MAX_LEN)}", seq, value)

    def _number(self, value: Decimal, path: str, leaf: str, seq: int) -> None:
        if not value.is_finite():
            self._bad(path, "is not finite", seq, value)
        elif leaf in _POSITIVE_PRICES and not price_ok(value):
            self._bad(path, f"not in (0, {PRICE_CEILING}]", seq, value)
        elif leaf in _BOOK_PRICES and not price_ok(value, allow_zero=True):
            self._bad(path, f"not in [0, {PRICE_CEILING}]", seq, value)
        elif leaf == "confidence" and not 0 <= value <= 1:
            self._bad(path, "not in [0, 1]", seq, value)
        elif abs(value) > MONEY_CEILING:
            self._bad(path, f"beyond {MONEY_CEILING:.0e}", seq, value)

    def _metadata(self, value: dict[str, Any], path: str, seq: int) -> None:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        depth, keys = _json_shape(value)
        if size > METADATA_MAX_BYTES:
            self._bad(path, f"larger than {METADATA_MAX_BYTES} bytes", seq, f"{size} bytes")
        if keys > METADATA_MAX_KEYS:
            self._bad(path, f"has more than {METADATA_MAX_KEYS} keys", seq, f"{keys} keys")
        if depth > METADATA_MAX_DEPTH:
            self._bad(path, f"deeper than {METADATA_MAX_DEPTH}", seq, f"depth {depth}")

    def check_honest(self, trader: HonestTrader) -> None:
        """Each honest submit that got a result is journaled once, as that order."""
        for client_order_id, result in trader.results.items():
            placed = self.placements.get(client_order_id, [])
            if len(placed) > 1:
                self.violations.add(
                    "honest: an order was placed more than once",
                    f"{client_order_id}: {placed}",
                )
            elif placed != [result.order_id]:
                self.violations.add(
                    "honest: the answered order is not the journaled one",
                    f"{client_order_id}: answered {result.order_id}, journaled {placed}",
                )


def _json_shape(value: object) -> tuple[int, int]:
    """(depth, keys) of decoded JSON; a flat object is depth 1, as in `_struct_shape`."""
    if isinstance(value, dict):
        children, keys = list(value.values()), len(value)
    elif isinstance(value, list):
        children, keys = value, 0
    else:
        return 0, 0
    depth = 0
    for child in children:
        d, k = _json_shape(child)
        depth, keys = max(depth, d), keys + k
    return depth + 1, keys


# ---------------------------------------------------------------------------------------
# Hypothesis strategies: hostile values and requests
# ---------------------------------------------------------------------------------------
NAN, INF = math.nan, math.inf
SPECIAL_FLOATS = (
    NAN,
    INF,
    -INF,
    0.0,
    -0.0,
    -1.0,
    -1500.0,
    5e-324,  # the smallest subnormal
    2.2250738585072014e-308,
    1e-9,
    0.01,
    0.05,
    1500.03,  # off tick
    float(PRICE_CEILING) + 0.05,
    float(PRICE_CEILING) * 10,
    1e17,  # the trigger accepted today
    1e26,  # the poison price of defect 1
    1e308,
    1.7976931348623157e308,
    9007199254740993.0,
)
SPECIAL_INTS = (0, -1, -(2**63), 2**63 - 1, QTY_CEILING + 1, 2**31, 2**53 + 1)
ENUM_NUMBERS = (99, -1, 5, 7, 2**31 - 1, -(2**31))

# Big strings are built once; sampled rarely (a few percent of the text draws).
BIG_TEXTS = ("x" * 70_000, "y" * 1_100_000 + "\n", "z" * 3_000_000)
SPECIAL_TEXTS = (
    "",
    " ",
    "\n",
    "NSE:INFY\n",
    "NSE:INFY\r\n",
    "NSE:INFY\x00",
    "NSE:INF\x1bY",
    "\x00",
    "a\x00b",
    "\x1b[31mred\x1b[0m",
    "tab\there",
    "\x7f",
    "\u0085next-line",
    "\u202eevil",
    "%s%s%n",
    "{0}{1}",
    "'; DROP TABLE events;--",
    "../../../etc/passwd",
    "😀" * 8,
    "s" * (STRATEGY_CODE_MAX_LEN + 1),
    "r" * (REASON_MAX_LEN + 1),
    "r" * (REASON_MAX_LEN * 10),
    "t" * (TAG_MAX_LEN + 1),
    "c" * (CLIENT_ORDER_ID_MAX_LEN + 1),
    "NSE:" + "A" * SYMBOL_MAX_LEN,
)
SPECIAL_SYMBOLS = (
    "NSE:INFY\n",
    "NSE:INFY\r",
    "NSE:INFY\x00",
    " NSE:INFY",
    "NSE:INFY ",
    "nse:infy",
    "NSE:",
    ":INFY",
    "NSE::INFY",
    "NSE:" + "A" * SYMBOL_MAX_LEN,
    "NSE:" + "A" * 3_000_000,
)

floats = st.one_of(st.floats(), st.sampled_from(SPECIAL_FLOATS))
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(SPECIAL_INTS))
enum_numbers = st.one_of(st.integers(0, 6), st.sampled_from(ENUM_NUMBERS))
texts = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(codec="ascii"), max_size=40),
    st.sampled_from(SPECIAL_TEXTS + BIG_TEXTS),
)
short_texts = st.one_of(st.text(max_size=12), st.sampled_from(SPECIAL_TEXTS[:19]))
symbols = st.one_of(
    st.sampled_from(KNOWN_SYMBOLS),
    st.from_regex(SYMBOL_RE, fullmatch=True),
    st.sampled_from(SPECIAL_SYMBOLS),
    texts,
)
on_tick_prices = st.integers(int(BASE_PRICE * 19), int(BASE_PRICE * 21)).map(lambda n: n / 20)


def _deep_struct(depth: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    level = root
    for _ in range(depth - 1):
        level = level.fields["d"].struct_value
    level.fields["leaf"].string_value = "x"
    return root


def _wide_struct(keys: int) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    for i in range(keys):
        struct.fields[f"k{i}"].number_value = i
    return struct


def _big_value_struct(size: int) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.fields["blob"].string_value = "m" * size
    return struct


# Depth 33 still parses as a SubmitOrderRequest; deeper ones cannot even be copied into
# a request here, so they go as raw bytes (SPECIAL_PAYLOADS).
SPECIAL_STRUCTS = (
    _deep_struct(METADATA_MAX_DEPTH + 1),
    _deep_struct(30),
    _wide_struct(METADATA_MAX_KEYS + 1),
    _wide_struct(20_000),
    _big_value_struct(METADATA_MAX_BYTES + 1),
    _big_value_struct(1_100_000),
)

_json_leaves = st.one_of(st.none(), st.booleans(), floats, short_texts)
_json = st.recursive(
    _json_leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(short_texts, kids, max_size=4)
    ),
    max_leaves=12,
)


def _to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


structs = st.one_of(
    st.dictionaries(short_texts, _json, max_size=5).map(_to_struct),
    st.sampled_from(SPECIAL_STRUCTS),
)

_HOSTILE_INTENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "symbol": symbols,
    "strategy_code": st.one_of(texts, st.sampled_from((HONEST_CODE, *ATTACKER_CODES))),
    "side": enum_numbers,
    "qty": int64s,
    "order_type": enum_numbers,
    "product": enum_numbers,
    "validity": enum_numbers,
    "price": st.one_of(st.none(), floats),
    "trigger_price": st.one_of(st.none(), floats),
    "tag": texts,
    "reason": texts,
    "confidence": st.one_of(st.none(), floats),
    "metadata": structs,
}


@st.composite
def intents(draw: st.DrawFn) -> orders_pb2.OrderIntent:
    """A well-formed intent (often placeable) with 0-3 of its fields made hostile."""
    order_type = draw(st.sampled_from(sorted(_ORDER_TYPES)))
    side = draw(st.sampled_from(sorted(_SIDES)))
    fields: dict[str, Any] = {
        "symbol": draw(st.sampled_from(KNOWN_SYMBOLS)),
        "strategy_code": draw(st.sampled_from(ATTACKER_CODES)),
        "side": side,
        "qty": draw(st.integers(1, 50)),
        "order_type": order_type,
        "product": draw(st.sampled_from(sorted(_PRODUCTS))),
        "validity": orders_pb2.VALIDITY_DAY,
        "price": None,
        "trigger_price": None,
        "tag": draw(st.sampled_from(("", "atk"))),
        "reason": draw(st.sampled_from(("", "probe"))),
        "confidence": None,
        "metadata": None,
    }
    a, b = sorted((draw(on_tick_prices), draw(on_tick_prices)))
    if order_type == orders_pb2.ORDER_TYPE_LIMIT:
        fields["price"] = a
    elif order_type == orders_pb2.ORDER_TYPE_SL:
        # A stop-loss BUY triggers at or below its limit; a SELL at or above.
        buy = side == orders_pb2.SIDE_BUY
        fields["price"], fields["trigger_price"] = (b, a) if buy else (a, b)
    elif order_type == orders_pb2.ORDER_TYPE_SL_M:
        fields["trigger_price"] = b
    # Mostly one hostile field, so it is not masked by another one the server checks first.
    count = draw(st.sampled_from((0, 1, 1, 1, 1, 2, 2, 3)))
    for name in draw(
        st.lists(
            st.sampled_from(sorted(_HOSTILE_INTENT_FIELDS)),
            min_size=count,
            max_size=count,
            unique=True,
        )
    ):
        fields[name] = draw(_HOSTILE_INTENT_FIELDS[name])
    intent = orders_pb2.OrderIntent()
    for name, value in fields.items():
        if value is None:
            continue
        if name == "metadata":
            intent.metadata.CopyFrom(value)
        else:
            setattr(intent, name, value)
    return intent


# The attacker replaces this with a new uuid at send time: hypothesis's own uuids repeat.
FRESH_COID = "<fresh client_order_id>"
client_order_ids = st.sampled_from((FRESH_COID,) * 6 + ("dup-1", "", "hostile")).flatmap(
    lambda choice: texts if choice == "hostile" else st.just(choice)
)
maybe_intents = st.sampled_from((True,) * 9 + (False,)).flatmap(
    lambda present: intents() if present else st.none()
)
order_ids = st.one_of(st.integers(1, 80).map(lambda n: f"O{n:010d}"), texts)
strategy_filters = st.one_of(st.sampled_from(("", HONEST_CODE, *ATTACKER_CODES)), texts)


@st.composite
def quotes(draw: st.DrawFn) -> market_data_pb2.Quote:
    """A well-formed quote with 0-3 of its fields made hostile."""
    ltp = draw(on_tick_prices)
    quote = market_data_pb2.Quote(symbol=draw(st.sampled_from(KNOWN_SYMBOLS)), ltp=ltp)
    if draw(st.booleans()):
        quote.bid, quote.ask = ltp - 0.05, ltp + 0.05
    hostile: dict[str, st.SearchStrategy[Any]] = {
        "symbol": symbols,
        "ltp": floats,
        "bid": floats,
        "ask": floats,
        "bid_qty": int64s,
        "ask_qty": int64s,
        "volume": int64s,
        "timestamp": st.tuples(int64s, st.integers(-(2**31), 2**31 - 1)),
    }
    count = draw(st.integers(0, 3))
    for name in draw(
        st.lists(st.sampled_from(sorted(hostile)), min_size=count, max_size=count, unique=True)
    ):
        value = draw(hostile[name])
        if name == "timestamp":
            quote.timestamp.seconds, quote.timestamp.nanos = value
        else:
            setattr(quote, name, value)
    return quote


def _stream_fills_request(
    codes: list[str], syms: list[str], start: int, updates: bool, risk: bool, beat: int
) -> gateway_pb2.StreamFillsRequest:
    return gateway_pb2.StreamFillsRequest(
        strategy_codes=codes,
        symbols=syms,
        from_sequence=start,
        include_order_updates=updates,
        include_risk_events=risk,
        heartbeat_interval_ms=beat,
    )


REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "SubmitOrder": st.builds(
        lambda intent, coid: gateway_pb2.SubmitOrderRequest(intent=intent, client_order_id=coid),
        maybe_intents,
        client_order_ids,
    ),
    "CancelOrder": st.builds(lambda i: gateway_pb2.CancelOrderRequest(order_id=i), order_ids),
    "GetOrder": st.builds(lambda i: gateway_pb2.GetOrderRequest(order_id=i), order_ids),
    "ListOrders": st.builds(
        lambda code, status, sym: gateway_pb2.ListOrdersRequest(
            strategy_code=code, status=status, symbol=sym
        ),
        strategy_filters,
        enum_numbers,
        st.one_of(st.just(""), symbols),
    ),
    "GetPositions": st.builds(
        lambda code: gateway_pb2.GetPositionsRequest(strategy_code=code), strategy_filters
    ),
    "StreamFills": st.builds(
        _stream_fills_request,
        st.one_of(st.lists(strategy_filters, max_size=3), st.just(["s"] * 50_000)),
        st.lists(symbols, max_size=3),
        st.one_of(st.sampled_from((0, 0, 1, 2, 2**64 - 1)), st.integers(0, 2**64 - 1)),
        st.booleans(),
        st.booleans(),
        st.one_of(st.sampled_from((0, 1, 49, 50, 2**32 - 1)), st.integers(0, 2**32 - 1)),
    ),
    "GetRiskState": st.builds(
        lambda code: gateway_pb2.GetRiskStateRequest(strategy_code=code), strategy_filters
    ),
    "HaltTrading": st.builds(
        lambda reason, actor, code: gateway_pb2.HaltTradingRequest(
            reason=reason, actor=actor, strategy_code=code
        ),
        texts,
        texts,
        st.one_of(st.sampled_from(ATTACKER_CODES), texts),
    ),
    "ResumeTrading": st.builds(
        lambda reason, actor, code: gateway_pb2.ResumeTradingRequest(
            reason=reason, actor=actor, strategy_code=code
        ),
        texts,
        texts,
        st.one_of(st.sampled_from(("", *ATTACKER_CODES)), texts),
    ),
    "PreviewOrder": st.builds(
        lambda intent: gateway_pb2.PreviewOrderRequest(intent=intent),
        maybe_intents,
    ),
    "PublishQuotes": st.lists(
        st.builds(
            lambda qs: market_data_pb2.PublishQuotesRequest(quotes=qs),
            st.lists(quotes(), max_size=4),
        ),
        min_size=1,
        max_size=3,
    ),
    "GetQuote": st.builds(lambda s: market_data_pb2.GetQuoteRequest(symbol=s), symbols),
}


def _serialized(rpc: str) -> st.SearchStrategy[list[bytes]]:
    def encode(case: Message | list[Message]) -> list[bytes]:
        requests = case if isinstance(case, list) else [case]
        return [r.SerializeToString() for r in requests]

    return REQUESTS[rpc].map(encode)


@st.composite
def _mutated(draw: st.DrawFn, rpc: str) -> list[bytes]:
    """A serialized request with a few bytes flipped, cut, inserted or deleted."""
    payloads = draw(_serialized(rpc))
    out = []
    for payload in payloads:
        data = bytearray(payload)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(("flip", "truncate", "insert", "delete")))
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
            if op == "flip" and data:
                data[pos] ^= draw(st.integers(1, 255))
            elif op == "truncate":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            elif data:
                del data[pos]
        out.append(bytes(data))
    return out


def _invalid_utf8_submit() -> bytes:
    # SubmitOrderRequest.client_order_id (field 2, length-delimited) = b"\xff\xfe".
    return b"\x12\x02\xff\xfe"


def _deep_submit(depth: int) -> bytes:
    request = gateway_pb2.SubmitOrderRequest(intent=orders_pb2.OrderIntent(symbol=INFY))
    request.intent.metadata.CopyFrom(_deep_struct(depth))
    return request.SerializeToString()


SPECIAL_PAYLOADS = (
    b"",
    b"\x00",
    b"\xff" * 16,
    b"\x08",  # a varint tag with no value
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    _invalid_utf8_submit(),
    _deep_submit(60),
    b"\x0a" + b"\x0a\x7f" * 200,
)


@st.composite
def raw_cases(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    """(rpc, request bodies): random bytes, mutated requests, or known-bad encodings."""
    rpc = draw(st.sampled_from(sorted(RPCS)))
    payloads = draw(
        st.one_of(
            st.lists(st.binary(max_size=64), min_size=1, max_size=2),
            _mutated(rpc),
            st.sampled_from(SPECIAL_PAYLOADS).map(lambda p: [p]),
        )
    )
    return rpc, payloads


# ---------------------------------------------------------------------------------------
# Explicit examples: the inputs issue 8 names, always sent before the generated ones.
# ---------------------------------------------------------------------------------------
def _intent(**fields: Any) -> orders_pb2.OrderIntent:
    """A well-formed MARKET BUY 1 NSE:TCS of the attacker, with `fields` replaced."""
    values: dict[str, Any] = {
        "symbol": "NSE:TCS",
        "strategy_code": ATTACKER_CODES[0],
        "side": orders_pb2.SIDE_BUY,
        "qty": 1,
        "order_type": orders_pb2.ORDER_TYPE_MARKET,
        "product": orders_pb2.PRODUCT_MIS,
        "validity": orders_pb2.VALIDITY_DAY,
    }
    values.update(fields)
    metadata = values.pop("metadata", None)
    intent = orders_pb2.OrderIntent(**values)
    if metadata is not None:
        intent.metadata.CopyFrom(metadata)
    return intent


def _submit(**fields: Any) -> gateway_pb2.SubmitOrderRequest:
    coid = fields.pop("client_order_id", FRESH_COID)
    return gateway_pb2.SubmitOrderRequest(intent=_intent(**fields), client_order_id=coid)


def _quotes(**fields: Any) -> list[market_data_pb2.PublishQuotesRequest]:
    values: dict[str, Any] = {"symbol": "NSE:SBIN", "ltp": BASE_PRICE}
    values.update(fields)
    timestamp = values.pop("timestamp", None)
    quote = market_data_pb2.Quote(**values)
    if timestamp is not None:
        quote.timestamp.seconds, quote.timestamp.nanos = timestamp
    return [market_data_pb2.PublishQuotesRequest(quotes=[quote])]


def well_formed_quotes() -> list[market_data_pb2.PublishQuotesRequest]:
    """Quotes as an honest feed sends them: on tick, bid <= ask, a valid timestamp."""
    return [
        *_quotes(),
        *_quotes(symbol=INFY, ltp=1500.05, bid=1500.0, ask=1500.1, bid_qty=5, ask_qty=7),
        *_quotes(timestamp=(1_795_000_000, 500)),
    ]


_LIMIT, _SL, _SL_M = (
    orders_pb2.ORDER_TYPE_LIMIT,
    orders_pb2.ORDER_TYPE_SL,
    orders_pb2.ORDER_TYPE_SL_M,
)
_NAN_STRUCT = _to_struct({"score": 1.0})
_NAN_STRUCT.fields["score"].number_value = NAN
_INTENT_EXAMPLES = (
    _intent(order_type=_LIMIT, price=1e26),  # defect 1: the poison price
    _intent(order_type=_SL, price=1e26, trigger_price=1e17),
    _intent(order_type=_SL_M, trigger_price=1e17),  # defect 1: the accepted trigger
    _intent(symbol="NSE:TCS\n"),  # defect 2: `$` allows a trailing newline
    _intent(strategy_code="s" * 2_200_000),  # defect 2: a fill event over 4 MiB
    _intent(reason="r" * 3_900_000),  # defect 2: 3.9 MB reasons in the journal
    _intent(metadata=_big_value_struct(1_100_000)),
    _intent(metadata=_wide_struct(20_000)),
    _intent(metadata=_deep_struct(30)),
    _intent(metadata=_NAN_STRUCT),
    _intent(strategy_code="atk\n"),
    _intent(reason="why\n"),
    _intent(tag="tag\n"),
    _intent(side=99),
    _intent(qty=2**63 - 1),
    _intent(confidence=NAN),
)
EXPLICIT: dict[str, list[Any]] = {
    "SubmitOrder": [
        *(
            gateway_pb2.SubmitOrderRequest(intent=i, client_order_id=FRESH_COID)
            for i in _INTENT_EXAMPLES
        ),
        _submit(client_order_id="abc\n"),
    ],
    "PreviewOrder": [gateway_pb2.PreviewOrderRequest(intent=i) for i in _INTENT_EXAMPLES],
    "PublishQuotes": [
        _quotes(ltp=1e308),  # defect 3
        _quotes(ltp=5e-324),
        _quotes(ltp=1500.03),  # off tick
        _quotes(bid=1501.0, ask=1499.0),
        _quotes(bid_qty=-5, ask_qty=-5, volume=-1),
        _quotes(timestamp=(2**62, 0)),  # defect 3: INTERNAL today
        _quotes(timestamp=(0, -1)),
        _quotes(symbol="NSE:SBIN\n"),
        _quotes(symbol=INFY, ltp=1e308),  # defect 3, on the honest client's symbol
    ],
    "ListOrders": [gateway_pb2.ListOrdersRequest(status=99)],  # type: ignore[arg-type]  # defect 7
    "HaltTrading": [
        gateway_pb2.HaltTradingRequest(reason="h" * 3_000_000, strategy_code="atk-2"),
        gateway_pb2.HaltTradingRequest(reason="stop\n", strategy_code="atk-2"),
        gateway_pb2.HaltTradingRequest(reason="stop", strategy_code="atk-2\n"),
    ],
    "ResumeTrading": [
        gateway_pb2.ResumeTradingRequest(reason="h" * 3_000_000, strategy_code="atk-2"),
        gateway_pb2.ResumeTradingRequest(reason="go\n", strategy_code="atk-2"),
    ],
    "GetQuote": [
        market_data_pb2.GetQuoteRequest(symbol="NSE:" + "A" * 3_000_000),
        market_data_pb2.GetQuoteRequest(symbol="NSE:INFY\n"),
    ],
    "CancelOrder": [gateway_pb2.CancelOrderRequest(order_id="o" * 3_000_000)],
    "GetOrder": [gateway_pb2.GetOrderRequest(order_id="o" * 3_000_000)],
    "GetPositions": [gateway_pb2.GetPositionsRequest(strategy_code="p" * 3_000_000)],
    "GetRiskState": [gateway_pb2.GetRiskStateRequest(strategy_code="p" * 3_000_000)],
    "StreamFills": [
        gateway_pb2.StreamFillsRequest(
            from_sequence=1, include_order_updates=True, include_risk_events=True
        ),
        gateway_pb2.StreamFillsRequest(from_sequence=2**64 - 1),
        gateway_pb2.StreamFillsRequest(heartbeat_interval_ms=1),
    ],
}
EXPLICIT_RAW: list[tuple[str, list[bytes]]] = [
    ("SubmitOrder", [bytes(range(256))]),  # defect 7: UNKNOWN and <class DecodeError> today
    ("SubmitOrder", [_deep_submit(60)]),
    ("SubmitOrder", [_invalid_utf8_submit()]),
    ("PublishQuotes", [b"\xff" * 16]),  # defect 7: INTERNAL today
    ("ListOrders", [b"\x10\x63"]),  # status=99 on the wire
    ("StreamFills", [b"\xff" * 16]),
]
