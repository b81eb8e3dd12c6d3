"""A cap on server-streaming RPCs open at once, across all connections.

Subscriptions (StreamFills, health Watch, reflection) live for hours and each holds a
slot of the server's RPC limit; without a cap of their own, subscribers alone could take
every slot and refuse every order. PublishQuotes, a client stream, is left out: the
market-data feed must not be refused because subscribers are many.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from execgw.server.api.method_handlers import Context, Continuation, Handler, wrap


class StreamLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        # Every behavior runs on the server's one event loop: a plain counter is enough.
        self.open = 0

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not handler.response_streaming:
            return handler
        return wrap(handler, self._slot, request_deserializer=handler.request_deserializer)

    @asynccontextmanager
    async def _slot(self, request: Any, context: Context) -> AsyncIterator[Any]:
        if self.open >= self.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the gateway already has {self.max_streams} streams open, its limit "
                "(server.max_streams); retry later",
            )
        self.open += 1
        try:
            yield request
        finally:
            self.open -= 1
