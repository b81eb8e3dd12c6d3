"""ListOrders pages: how many orders a page holds, and the token for the next one.

The token names the last order the gateway looked at for a page (returned, or passed
over by the filters), so the next page starts right after it: order ids grow with
placement, so orders placed while a client pages through come after everything it has
seen and never shift a page. A page looks at a bounded number of orders
(ledger.MAX_ORDERS_EXAMINED), so with filters that match few orders it can be short,
even empty, and still carry a token: only a page without a token is the last. The
token also carries a fingerprint of the filters, so it cannot be replayed against a
different listing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from execgw.server.validation import InvalidRequest

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A page ends before it passes this many bytes (encoded). Typical orders take ~110
# bytes, so this binds only for unusually large ones. Kept small because a caller that
# never reads its page holds it in the server, several times over as objects, until the
# call ends; and so that it fits the smallest send limit allowed (1 MiB) with room.
MAX_PAGE_BYTES = 256 * 1024
# Far above any token issued here; refusing longer ones bounds the work of parsing them.
_MAX_TOKEN_CHARS = 256
_VERSION = 1


def page_size(requested: int) -> int:
    """0 is the default; above the maximum is lowered to it (AIP-158), not refused."""
    if requested < 0:
        raise InvalidRequest("page_size", f"must be >= 0 (0 means {DEFAULT_PAGE_SIZE})")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class OrderFilters:
    strategy_code: str
    status: int
    symbol: str

    def fingerprint(self) -> str:
        text = json.dumps([self.strategy_code, self.status, self.symbol])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def next_page_token(after_order_id: str, filters: OrderFilters) -> str:
    """A token for the page that starts after order `after_order_id`."""
    body = json.dumps(
        {"v": _VERSION, "after": after_order_id, "f": filters.fingerprint()},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def resume_after(token: str, filters: OrderFilters) -> str:
    """The order id the page starts after; "" (from the start) for an empty token."""
    if not token:
        return ""
    data = _decode(token)
    after = data.get("after") if data is not None else None
    if data is None or data.get("v") != _VERSION or not isinstance(after, str) or not after:
        raise InvalidRequest(
            "page_token", "is not a page token from this gateway; list again without one"
        )
    if data.get("f") != filters.fingerprint():
        raise InvalidRequest(
            "page_token",
            "was issued for other filters; send the strategy_code, status and symbol "
            "of the first page with it",
        )
    return after


def _decode(token: str) -> dict[str, object] | None:
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None
