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
from execgw.server.instruments import InstrumentRegistry
from execgw.server.validation import Violations, validate_quote, validate_symbol
from execgw.v1 import market_data_pb2, market_data_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


# Refusal details kept for the response; the count covers them all, so a stream
# refused for hours still gets a bounded response.
MAX_REFUSALS_REPORTED = 100


class MarketDataServicer(market_data_pb2_grpc.MarketDataServicer):
    def __init__(
        self,
        core: GatewayCore,
        clock: Clock,
        instruments: InstrumentRegistry,
        *,
        source: str = "external",
    ) -> None:
        self._core = core
        self._clock = clock
        self._instruments = instruments
        # Quotes are published only with market_data.source external: with synthetic or
        # kite the gateway has its own, and a published price would fill orders at it.
        self._source = source

    @unary
    async def PublishQuotes(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request_iterator: AsyncIterator[market_data_pb2.PublishQuotesRequest],
        context: Context,
    ) -> market_data_pb2.PublishQuotesResponse:
        if self._source != "external":
            # Refused before a quote is read, whoever asks: a published price would move
            # the gateway's own market and fill orders at it.
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"PublishQuotes is refused: market_data.source is {self._source}, so the "
                "gateway makes its own quotes",
            )
        response = market_data_pb2.PublishQuotesResponse()
        index = 0
        async for request in request_iterator:
            now = self._clock.now()
            # The whole request is validated before any of it is applied, so a bad
            # quote leaves its request (and everything after) unapplied; the error
            # names every malformed field of the request.
            found = Violations()
            validated = [
                found.value(
                    validate_quote,
                    convert.quote_in(msg),
                    self._instruments,
                    f"quotes[{index + i}].",
                    now,
                )
                for i, msg in enumerate(request.quotes)
            ]
            found.raise_if_any()
            quotes = [q for q in validated if q is not None]
            if quotes:
                outcome = await self._core.apply_quotes(quotes)
                response.accepted += outcome.accepted
                response.refused_count += len(outcome.refused)
                for refusal in outcome.refused:
                    if len(response.refused) < MAX_REFUSALS_REPORTED:
                        response.refused.add(
                            index=index + refusal.position,
                            symbol=refusal.symbol,
                            reason=refusal.reason,
                        )
            index += len(quotes)
        return response

    @unary
    async def GetQuote(  # noqa: N802
        self, request: market_data_pb2.GetQuoteRequest, context: Context
    ) -> market_data_pb2.GetQuoteResponse:
        validate_symbol(request.symbol, "symbol")
        quote = self._core.quote(request.symbol)
        if quote is None:
            raise QuoteNotFound(f"no quote for {request.symbol}")
        return market_data_pb2.GetQuoteResponse(quote=convert.quote_out(quote))
