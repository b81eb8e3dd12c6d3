"""grpc.health.v1 with List, and the market-data entries it reports.

grpcio's asyncio HealthServicer answers Check and Watch but not List. List is what lets
a probe see every entry at once, and so which symbols are stale without knowing their
names first.

Besides "" and the two services (the journal's health, as before), with staleness on
(market_data.stale_after_s) the gateway reports:
- `execgw.market_data`: SERVING while the feed is connected (source kite) and no
  watched symbol is stale; NOT_SERVING otherwise;
- `execgw.market_data/<SYMBOL>` for each watched symbol (the feed's own, and those with
  an open position or resting order): NOT_SERVING while its quote is stale.
A stale symbol never turns "" NOT_SERVING: cancels, reads and orders in other symbols
still work, and a load balancer must not take the gateway away for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from grpc_health.v1 import health, health_pb2

FEED_ENTRY = "execgw.market_data"
SYMBOL_ENTRY_PREFIX = FEED_ENTRY + "/"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # untyped base
    async def List(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name, status in sorted(self._server_status.items()):
            response.statuses[name].status = status
        return response

    async def report_market_data(
        self, *, feed_up: bool, watched: Iterable[str], stale: Iterable[str]
    ) -> None:
        """Bring the market-data entries to this picture: set what changed, and drop
        the entries of symbols no longer watched."""
        stale_set = set(stale)
        wanted = {FEED_ENTRY: SERVING if feed_up and not stale_set else NOT_SERVING}
        for symbol in watched:
            wanted[SYMBOL_ENTRY_PREFIX + symbol] = NOT_SERVING if symbol in stale_set else SERVING
        for name in [n for n in self._server_status if n.startswith(SYMBOL_ENTRY_PREFIX)]:
            if name not in wanted:
                await self._forget(name)
        for name, status in wanted.items():
            if self._server_status.get(name) != status:
                await self.set(name, status)

    async def _forget(self, name: str) -> None:
        if name in self._server_watchers:
            # A Watch on it goes on, and is told the entry is gone.
            await self.set(name, SERVICE_UNKNOWN)
        self._server_status.pop(name, None)
