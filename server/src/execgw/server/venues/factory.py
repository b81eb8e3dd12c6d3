"""Which venue a config asks for. Only the config decides: nothing over RPC can switch
paper to live or turn a dry run off, because no RPC reaches this."""

from __future__ import annotations

from decimal import Decimal

from execgw.server.config import ChargesConfig, GatewayConfig, SimulatorConfig
from execgw.server.instruments import InstrumentRegistry
from execgw.server.venues.base import Venue
from execgw.server.venues.charges import ChargeModel, SegmentRates
from execgw.server.venues.dry_run import DryRunVenue
from execgw.server.venues.fill_model import FillModel
from execgw.server.venues.kite.venue import KiteVenue
from execgw.server.venues.latency import LatencyModel
from execgw.server.venues.paper import PaperVenue
from execgw.server.venues.simulator import SmartFillSimulator


def build_venue(config: GatewayConfig, instruments: InstrumentRegistry) -> Venue:
    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(repr(config.execution.slippage_bps)),
            instruments=instruments,
            model=fill_model(config.execution.simulator),
            charges=charge_model(config.execution.charges),
            latency=latency_model(config.execution.simulator),
            kite_statuses=config.execution.simulator.kite_statuses,
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
        touch_fill_probability=Decimal(repr(sim.touch_fill_probability)),
        seed=sim.seed,
    )


def latency_model(sim: SimulatorConfig) -> LatencyModel:
    latency = sim.latency_ms
    return LatencyModel(
        insert_ms=Decimal(repr(latency.insert)),
        cancel_ms=Decimal(repr(latency.cancel)),
        jitter_ms=Decimal(repr(latency.jitter)),
        seed=sim.seed,
        fill_ms=Decimal(repr(latency.fill)),
    )


def charge_model(charges: ChargesConfig) -> ChargeModel | None:
    """The simulator's charges from their config; None when they are off."""
    if not charges.enabled:
        return None

    def exact(value: float) -> Decimal:
        return Decimal(repr(value))

    return ChargeModel(
        segments={
            name: SegmentRates(
                brokerage_pct=None if r.brokerage_pct is None else exact(r.brokerage_pct),
                brokerage_max_rupees=exact(r.brokerage_max_rupees),
                stt_buy_pct=exact(r.stt_buy_pct),
                stt_sell_pct=exact(r.stt_sell_pct),
                exchange_txn_pct=exact(r.exchange_txn_pct),
                stamp_buy_pct=exact(r.stamp_buy_pct),
            )
            for name, r in charges.segments.items()
        },
        sebi_per_crore=exact(charges.sebi_per_crore),
        gst_pct=exact(charges.gst_pct),
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
