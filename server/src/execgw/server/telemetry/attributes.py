"""The names telemetry uses: span and metric attribute keys (all `execgw.*`, besides
OpenTelemetry's own `rpc.*`), span names, and the session metadata key.

Only these keys are ever written from a request or a call: never metadata values other
than the session id, never credentials, never the free text of an order (tag, reason,
metadata). A test holds every exported attribute to this module's keys.
"""

from __future__ import annotations

import re
from typing import Final

# Metadata key by which a call names its session (the clients send it; see
# execgw.client.SESSION_METADATA_KEY, the same string).
SESSION_METADATA_KEY: Final = "x-execgw-session"
_SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
SESSION_RULE: Final = "1-64 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"


def valid_session_id(value: str) -> bool:
    return _SESSION_RE.fullmatch(value) is not None


# -- attributes ----------------------------------------------------------------------
SESSION_ID: Final = "execgw.session_id"
MODE: Final = "execgw.mode"
DRY_RUN: Final = "execgw.dry_run"
ORDER_ID: Final = "execgw.order_id"
CLIENT_ORDER_ID: Final = "execgw.client_order_id"
STRATEGY: Final = "execgw.strategy_code"
SYMBOL: Final = "execgw.symbol"
SIDE: Final = "execgw.side"
QTY: Final = "execgw.qty"
FILLED_QTY: Final = "execgw.filled_qty"
STATUS: Final = "execgw.status"
REJECT_REASON: Final = "execgw.reject_reason"
EVENT: Final = "execgw.event"
BREAKER: Final = "execgw.breaker"
SCOPE: Final = "execgw.scope"
INTERNAL: Final = "execgw.internal"
# OpenTelemetry's RPC semantic conventions.
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"

# -- span names ----------------------------------------------------------------------
# RPC spans are named as OpenTelemetry's conventions say: "execgw.v1.ExecutionGateway/
# SubmitOrder". The order path's own spans:
ORDER_SPAN: Final = "execgw.order"
JOURNAL_COMMIT_SPAN: Final = "execgw.journal.commit"
# One child span per stage of the order path is named STAGE_SPAN_PREFIX + the stage
# ("execgw.stage.risk"); `execgw trace summary` reports any it finds.
STAGE_SPAN_PREFIX: Final = "execgw.stage."
# The stages a batch does once for all its orders, shown as a span per order: the
# journal commit, and the publish to subscribers (after the callers were answered, so
# its span may end after the call's and after the order's next spans).
JOURNAL_STAGE: Final = STAGE_SPAN_PREFIX + "journal"
PUBLISH_STAGE: Final = STAGE_SPAN_PREFIX + "publish"
