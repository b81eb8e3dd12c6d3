"""Python client of the execgw execution gateway.

    from execgw.client import ExecutionClient, limit

    with ExecutionClient("127.0.0.1:50051") as gw:
        result = gw.submit(limit("NSE:INFY", "BUY", 10, 1500.5, strategy_code="mom"))

Strategies import everything they need from here, including the wire message
types, so they never have to know the generated module layout.
"""

from execgw.client import builders, money
from execgw.client._async import AsyncExecutionClient
from execgw.client._sync import ExecutionClient
from execgw.client._tracing import SESSION_METADATA_KEY, session
from execgw.client.builders import limit, market, stop
from execgw.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    ExecgwError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)
from execgw.client.legacy import (
    intent_from_kite,
    intent_from_legacy,
    intent_to_legacy,
    result_from_legacy,
    result_to_legacy,
)
from execgw.client.money import exact, exact_field
from execgw.v1.market_data_pb2 import Quote
from execgw.v1.orders_pb2 import (
    ExecutionEvent,
    ExecutionResult,
    Fill,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    Product,
    RejectReason,
    RiskEvent,
    RiskEventKind,
    Side,
    TradingState,
    Validity,
)

__all__ = [
    "SESSION_METADATA_KEY",
    "AlreadyExists",
    "AsyncExecutionClient",
    "DeadlineExceeded",
    "ExecgwError",
    "ExecutionClient",
    "ExecutionEvent",
    "ExecutionResult",
    "FailedPrecondition",
    "Fill",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OrderIntent",
    "OrderStatus",
    "OrderType",
    "OutOfRange",
    "PermissionDenied",
    "Position",
    "Product",
    "Quote",
    "RejectReason",
    "ResourceExhausted",
    "RiskEvent",
    "RiskEventKind",
    "Side",
    "TradingState",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Validity",
    "builders",
    "exact",
    "exact_field",
    "from_rpc_error",
    "intent_from_kite",
    "intent_from_legacy",
    "intent_to_legacy",
    "limit",
    "market",
    "money",
    "result_from_legacy",
    "result_to_legacy",
    "session",
    "stop",
]
