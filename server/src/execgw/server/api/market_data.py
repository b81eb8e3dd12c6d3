"""MarketData servicer: quotes in, quotes out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from execgw.server.api import convert
from execgw.server.api.errors import unary
from execgw.server.clock import Clock
from execgw.server.core import GatewayCore
from execgw.server.errors import QuoteNotFound
from execgw.server.validation import InvalidRequest, validate_quote
from execgw.v1 import market_data_pb2, market_data_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class MarketDataServicer(market_data_pb2_grpc.MarketDataServicer):
    def __init__(self, core: GatewayCore, clock: Clock) -> None:
        self._core = core
        self._clock = clock

    @unary
    async def PublishQuotes(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request_iterator: AsyncIterator[market_data_pb2.PublishQuotesRequest],
        context: Context,
    ) -> market_data_pb2.PublishQuotesResponse:
        accepted = 0
        index = 0
        async for request in request_iterator:
            quotes = []
            for msg in request.quotes:
                validate_quote(msg.symbol, msg.ltp, msg.bid, msg.ask, f"quotes[{index}].")
                quotes.append(convert.quote_in(msg, self._clock.now()))
                index += 1
            accepted += await self._core.apply_quotes(quotes)
        return market_data_pb2.PublishQuotesResponse(accepted=accepted)

    @unary
    async def GetQuote(  # noqa: N802
        self, request: market_data_pb2.GetQuoteRequest, context: Context
    ) -> market_data_pb2.GetQuoteResponse:
        if not request.symbol:
            raise InvalidRequest("symbol", "must not be empty")
        quote = self._core.quote(request.symbol)
        if quote is None:
            raise QuoteNotFound(f"no quote for {request.symbol}")
        return market_data_pb2.GetQuoteResponse(quote=convert.quote_out(quote))
