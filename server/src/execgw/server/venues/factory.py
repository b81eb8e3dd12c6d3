"""Which venue a config asks for. Only the config decides: nothing over RPC can switch
paper to live or turn a dry run off, because no RPC reaches this."""

from __future__ import annotations

from decimal import Decimal

from execgw.server.config import GatewayConfig, SimulatorConfig
from execgw.server.instruments import InstrumentRegistry
from execgw.server.venues.base import Venue
from execgw.server.venues.dry_run import DryRunVenue
from execgw.server.venues.fill_model import FillModel
from execgw.server.venues.kite.venue import KiteVenue
from execgw.server.venues.paper import PaperVenue
from execgw.server.venues.simulator import SmartFillSimulator


def build_venue(config: GatewayConfig, instruments: InstrumentRegistry) -> Venue:
    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(repr(config.execution.slippage_bps)),
            instruments=instruments,
            model=fill_model(config.execution.simulator),
        )

    protection = config.broker.kite.market_protection
    if config.mode == "paper":
        return PaperVenue(simulator())
    if config.execution.dry_run:
        fills = simulator() if config.execution.dry_run_fills == "simulate" else None
        return DryRunVenue(market_protection=protection, simulator=fills)
    return KiteVenue(market_protection=protection)


def fill_model(sim: SimulatorConfig) -> FillModel:
    """The simulator's market model from its config (floats to exact Decimals)."""
    return FillModel(
        price_source=sim.price_source,
        cap_to_displayed_qty=sim.cap_to_displayed_qty,
        volume_limit=None if sim.volume_limit is None else Decimal(repr(sim.volume_limit)),
        slippage_model=sim.slippage_model,
        impact_k=Decimal(repr(sim.impact_k)),
    )


def venue_name(config: GatewayConfig) -> str:
    """The name orders of this config's venue carry (Order.venue, "paper" for paper)."""
    if config.mode == "paper":
        return PaperVenue.name
    return DryRunVenue.name if config.execution.dry_run else KiteVenue.name


def describe(config: GatewayConfig) -> str:
    """The venue in a few words, for the start-up line and logs."""
    if config.mode == "paper":
        return "paper simulator"
    if config.execution.dry_run:
        return f"Kite DRY RUN (never sent; fills: {config.execution.dry_run_fills})"
    return f"Kite at {config.broker.kite.root}"
