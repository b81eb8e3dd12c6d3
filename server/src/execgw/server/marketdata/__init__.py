"""Quote sources: the synthetic random walk and Kite's WebSocket ticker.

Each feeds the quote book the same way, through `GatewayCore.apply_quotes`, from outside
the single writer; PublishQuotes (api/market_data.py) is the third, external, source.
"""

from execgw.server.marketdata.synthetic import SyntheticFeed

__all__ = ["SyntheticFeed"]
