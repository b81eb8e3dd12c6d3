"""Typed configuration. Unknown keys, wrong types and out-of-range values stop start-up
with a message that names the key, because a silently ignored risk limit is worse
than a gateway that refuses to start."""

from __future__ import annotations

import collections.abc
import difflib
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from execgw.server.chain import ENV_NAME_RULE, valid_env_name
from execgw.server.validation import InvalidRequest, is_full_symbol, validate_strategy_code
from execgw.server.venues.charges import NSE_ROW


class ConfigError(ValueError):
    pass


def _host_port(value: str) -> str:
    """`value` if it is HOST:PORT with a port from 0 to 65535; the listen addresses'
    one rule."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT, got {value!r}")
    return value


class _Section(BaseModel):
    # strict: YAML `true` or "50" where a number belongs is a mistake, not a value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HeadAnchorConfig(_Section):
    # A JSON-lines file the chain head is appended to; keep it where whoever can write
    # the journal cannot (another host, an append-only file): see docs/journal-integrity.md.
    path: str = Field(min_length=1)
    interval_s: float = Field(default=60.0, gt=0, le=86_400)


class JournalConfig(_Section):
    path: str = "var/journal.db"
    # Name of the environment variable holding the HMAC key of a keyed chain; empty
    # means the plain sha256 chain. The key itself never goes in the config.
    hmac_key_env: str = ""
    # Periodic records of the chain head, for `execgw journal verify --anchor`; off if null.
    anchor: HeadAnchorConfig | None = None
    # Commands per durable commit at most; 1 gives one fsync per order (slow, for comparison).
    max_batch: int = Field(default=512, ge=1, le=100_000)
    # Events between state snapshots; bounds how much a restart replays.
    snapshot_every: int = Field(default=10_000, ge=1)
    # Seconds between write probes while the journal is failing.
    probe_interval_s: float = Field(default=0.5, gt=0, le=60)
    # Keep at least this many events for StreamFills replay; older events below the
    # latest snapshot are pruned. 0 keeps everything.
    retain_events: int = Field(default=0, ge=0)
    # Journal the quotes each batch accepted (QuotesRecorded), so that `execgw replay`
    # can re-run the day through another config. Off by default: one record per batch.
    record_quotes: bool = False

    @field_validator("hmac_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        # The message must not echo the value: a key pasted here by mistake stays unprinted.
        # A name that passes is upper case and shorter than any usable key, so the
        # messages that do name the variable cannot print a key.
        if value and not valid_env_name(value):
            raise ValueError(ENV_NAME_RULE)
        return value


class SyntheticFeedConfig(_Section):
    # A seeded random walk: the same seed gives the same quotes.
    seed: int = 42
    interval_ms: int = Field(default=250, ge=1, le=60_000)
    volatility_bps: float = Field(default=8.0, ge=0.0, le=1_000.0)
    symbols: dict[str, float] = Field(
        default_factory=lambda: {
            "NSE:INFY": 1500.0,
            "NSE:RELIANCE": 2900.0,
            "NSE:TCS": 4100.0,
            "NSE:HDFCBANK": 1650.0,
            "NSE:SBIN": 820.0,
        }
    )

    @field_validator("symbols")
    @classmethod
    def _positive_prices(cls, value: dict[str, float]) -> dict[str, float]:
        for symbol, price in value.items():
            if ":" not in symbol:
                raise ValueError(f"symbol {symbol!r} must be EXCHANGE:TRADINGSYMBOL")
            if not price > 0:
                raise ValueError(f"starting price of {symbol} must be > 0")
        return value


# Kite's ticker takes at most this many instruments on one connection.
KITE_MAX_SUBSCRIPTIONS = 3000
DEFAULT_KITE_STALE_AFTER_S = 5.0


class KiteTickerConfig(_Section):
    """Kite's WebSocket ticker (market_data.source: kite). The credentials come from the
    environment only (KITE_API_KEY, KITE_ACCESS_TOKEN); the gateway adds them to the URL."""

    # Tests and `python tests/kite_ticker_standin.py` point it at a local stand-in.
    ws_root: str = "wss://ws.kite.trade"
    # Streamed in mode full from start-up, with every symbol that has an open position
    # or a resting order. Each must have an instrument token (instruments.csv, else the
    # instrument dump fetched with the SDK from broker.kite.root): one without is a
    # start-up error naming it.
    symbols: list[str] = Field(default_factory=list, max_length=KITE_MAX_SUBSCRIPTIONS)
    # Reconnects wait reconnect_initial_s, then twice as long each time, at most
    # reconnect_max_s; the wait starts over once a connection has delivered a frame.
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=600)
    # Kite sends a frame at least every second (a 1-byte heartbeat when nothing trades):
    # a connection silent for this long is dead, and is dropped and reopened.
    silence_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # How long opening the WebSocket (TCP, TLS and the HTTP upgrade) may take.
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("ws_root")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"must be a ws:// or wss:// URL, got {value!r}")
        if "?" in value or "#" in value:
            # The message does not echo the value: it may hold a pasted access token.
            raise ValueError(
                "must have no query string: the gateway adds api_key and access_token from "
                "KITE_API_KEY and KITE_ACCESS_TOKEN (the value given is not shown)"
            )
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            if not is_full_symbol(symbol):
                raise ValueError(f"symbol {symbol[:64]!r} must be EXCHANGE:TRADINGSYMBOL")
        if len(set(value)) != len(value):
            raise ValueError("lists a symbol twice")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> KiteTickerConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be at least "
                f"reconnect_initial_s ({self.reconnect_initial_s})"
            )
        return self


class MarketDataConfig(_Section):
    source: Literal["synthetic", "external", "kite"] = "synthetic"
    synthetic: SyntheticFeedConfig = SyntheticFeedConfig()
    kite: KiteTickerConfig = KiteTickerConfig()
    # A symbol with no tick for this many seconds (gateway clock, since its last
    # accepted quote) is stale: a new order in it is rejected with STALE_QUOTE, and
    # GetRiskState and health list it. null (the default) means 5 with source kite and
    # off with synthetic (the gateway makes those quotes itself) and external (a
    # publisher may quote rarely on purpose); a number applies to any source.
    stale_after_s: float | None = Field(default=None, gt=0, le=86_400)
    # A quote whose LTP is further than this fraction from the symbol's last accepted
    # LTP is refused: it moves no quote or mark and fills nothing. 0.20 is NSE's widest
    # static band (2, 5, 10, 20%); 0 or null turns the check off. The reference only
    # moves with accepted quotes, so a real gap beyond the band (e.g. after days of
    # downtime) refuses every quote of that symbol until an operator widens or turns
    # off the band and restarts: a stale mark is visible (refusals are logged and
    # returned to the publisher), a wrong price that fills orders is not undoable.
    price_band_pct: float | None = Field(default=0.20, ge=0, le=10)
    # Marks (the LTP of each symbol with an open position or resting order) are
    # journaled at most once per this many seconds of the gateway clock, plus whenever
    # a breaker or the day's peak equity moves on them. A restart values positions at
    # marks at most this old until their next quote.
    marks_every_s: float = Field(default=5.0, gt=0, le=3600)
    # Distinct symbols the quote book holds; a quote for one more is refused, so a
    # publisher cannot grow the gateway's memory without bound.
    max_symbols: int = Field(default=10_000, ge=1, le=1_000_000)
    # The band is never narrower than this many ticks, so cheap instruments can move.
    price_band_min_ticks: int = Field(default=20, ge=0, le=100_000)
    # This many refused quotes in a row that agree with each other (each within the
    # band of the one before) are a real gap, not a glitch: the band moves to them.
    # 0 means never: only an operator's restart with a wider band moves it.
    price_band_confirm_quotes: int = Field(default=5, ge=0, le=10_000)

    @model_validator(mode="after")
    def _kite_has_symbols(self) -> MarketDataConfig:
        if self.source == "kite" and not self.kite.symbols:
            raise ValueError(
                "source kite needs kite.symbols: the symbols to stream (positions and "
                "resting orders are added to them)"
            )
        return self

    def effective_stale_after_s(self) -> float | None:
        """stale_after_s with its default decided by the source; None: staleness is off."""
        if self.stale_after_s is not None:
            return self.stale_after_s
        return DEFAULT_KITE_STALE_AFTER_S if self.source == "kite" else None

    def feed_symbols(self) -> tuple[str, ...]:
        """The symbols the configured feed itself quotes (none for external)."""
        if self.source == "kite":
            return tuple(self.kite.symbols)
        if self.source == "synthetic":
            return tuple(self.synthetic.symbols)
        return ()


class InstrumentsConfig(_Section):
    # Kite's instrument dump (GET /instruments); symbols not in it use the defaults.
    csv: str | None = None
    default_tick_size: float = Field(default=0.05, gt=0)
    default_lot_size: int = Field(default=1, ge=1)
    # The exchange freeze quantity (the most one order may be) by symbol, or by a prefix
    # ending in "*", e.g. {"NFO:NIFTY*": 1800}: NSE publishes them per underlying
    # (nseindia.com, "qtyfreeze"), they are not in Kite's dump. See execution.autoslice.
    freeze_qty: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)


TripState = Literal["REDUCING", "HALTED"]


class BreakerTripStates(_Section):
    """The trading state each breaker puts its scope in when it trips."""

    max_daily_loss_rupees: TripState = "REDUCING"
    max_daily_drawdown_pct: TripState = "REDUCING"
    max_trades_per_day: TripState = "REDUCING"
    max_trades_per_strategy_per_day: TripState = "REDUCING"
    max_loss_streak: TripState = "HALTED"


class CircuitBreakersConfig(_Section):
    max_daily_loss_rupees: float = Field(default=5000.0, gt=0)
    max_daily_drawdown_pct: float = Field(default=0.02, gt=0, le=1)
    max_trades_per_day: int = Field(default=100, ge=1)
    max_trades_per_strategy_per_day: int = Field(default=50, ge=1)
    max_loss_streak: int = Field(default=5, ge=1)
    trip_to: BreakerTripStates = BreakerTripStates()


Product = Literal["MIS", "NRML", "CNC"]


class StrategyLimits(_Section):
    """Per-strategy overrides; anything left out uses the account default."""

    max_order_qty: int | None = Field(default=None, ge=1)
    max_order_notional_rupees: float | None = Field(default=None, gt=0)
    orders_per_second: float | None = Field(default=None, gt=0)
    order_burst: int | None = Field(default=None, ge=1)
    allowed_symbols: list[str] | None = None
    allowed_products: list[Product] | None = None
    min_confidence: float | None = Field(default=None, ge=0, le=1)


class PreTradeConfig(_Section):
    max_order_qty: int = Field(default=100_000, ge=1)
    max_order_notional_rupees: float = Field(default=10_000_000.0, gt=0)
    # A LIMIT or SL price further than this fraction from LTP is a fat finger.
    price_collar_pct: float = Field(default=0.10, gt=0, le=10)
    # Token bucket per strategy; 10/s is the SEBI and Kite threshold.
    orders_per_second: float = Field(default=10.0, gt=0)
    order_burst: int = Field(default=10, ge=1)
    # An identical order from the same strategy within this many seconds is rejected; 0 = off.
    duplicate_window_s: float = Field(default=0.0, ge=0, le=3600)
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    strategies: dict[str, StrategyLimits] = Field(default_factory=dict)


class LatencyConfig(_Section):
    """Milliseconds from the gateway to the simulated exchange (venues/latency.py)."""

    # An order meets the quote in force when it arrives, not when it was sent, and
    # reaches the exchange with the first quote of its symbol after it is due.
    insert: float = Field(default=0.0, ge=0, le=60_000)
    # The order works, and may fill, until its cancel arrives (PENDING_CANCEL meanwhile).
    cancel: float = Field(default=0.0, ge=0, le=60_000)
    # A fill the exchange made at T (on the quote in force at T) reaches the gateway at
    # T + fill (+ jitter), with the first quote of its symbol from then on; until then
    # the order shows no such fill. A cancel arriving meanwhile cannot undo it. 0 (the
    # default): fills are reported at once, and jitter does not apply to them.
    fill: float = Field(default=0.0, ge=0, le=60_000)
    # Added to each: uniform in [0, jitter), drawn from an RNG seeded by simulator.seed.
    jitter: float = Field(default=0.0, ge=0, le=60_000)


class SimulatorConfig(_Section):
    """The paper simulator's market model (venues/fill_model.py). The defaults are the
    seed's: fills at LTP +- slippage_bps for the whole quantity at once."""

    # ltp: every fill priced off the last traded price. touch: a BUY off the ask, a SELL
    # off the bid (the spread a taker really pays), LTP when that side is empty.
    # slippage_model then moves that price further against the trader.
    price_source: Literal["ltp", "touch"] = "ltp"
    # Each fill at most the quantity displayed at the touch (ask_qty for a BUY, bid_qty
    # for a SELL), shared by all orders within one quote. A remainder stays PARTIAL and
    # fills on later quotes (DAY) or is cancelled (IOC).
    cap_to_displayed_qty: bool = False
    # A participation cap, as zipline's VolumeShareSlippage volume_limit: fills of one
    # symbol take at most this fraction of the volume traded since its previous quote
    # (Quote.volume is cumulative). No fill until the feed shows traded volume. null: none.
    volume_limit: float | None = Field(default=None, gt=0, le=1)
    # fixed_bps: execution.slippage_bps against the trader. volume_share: impact =
    # impact_k * participation^2 (zipline), participation = (what the quote gave already
    # + this fill) / traded volume (else the displayed quantity of the fill's side).
    slippage_model: Literal["fixed_bps", "volume_share"] = "fixed_bps"
    # zipline's price_impact (0.1): the price moves 10% at 100% participation.
    impact_k: float = Field(default=0.1, ge=0, le=1)
    # A resting LIMIT whose price LTP only touches (does not trade through) fills with
    # this probability, for the queue ahead of it: 1.0 fills on touch (the seed's rule),
    # 0 needs a trade-through. Draws are seeded by `seed`, the order and the quote.
    touch_fill_probability: float = Field(default=1.0, ge=0, le=1)
    # Seeds every random draw (queue position, latency jitter): the same journal of
    # quotes and orders with the same seed gives the same fills.
    seed: int = 0
    # Paper latency; all 0 (the default): orders and cancels act at once.
    latency_ms: LatencyConfig = LatencyConfig()
    # Order updates carry Kite's status in raw (raw.status, filled_quantity,
    # pending_quantity), in Kite's sequence: OPEN PENDING (in flight), TRIGGER PENDING,
    # OPEN (also while partly filled), then COMPLETE, CANCELLED or REJECTED; strategy
    # code written against Kite's order updates then runs unchanged on paper.
    kite_statuses: bool = False


class SegmentChargesConfig(_Section):
    """One segment's rates; every *_pct is a percentage of turnover (0.03 = 0.03%). In
    execution.charges.segments a row is merged over the default row of its segment
    (ChargesConfig), so a rate left out there keeps the default's. Brokerage must be
    stated: brokerage_max_rupees is required unless brokerage_pct is 0 (a row
    {brokerage_pct: 0.03} with no cap would cap brokerage at Rs 0, i.e. charge none, and
    a row with neither would charge a flat Rs 0). The default row's brokerage counts as
    stated unless that row charges none (CNC): a row giving brokerage over it gives it
    whole, so a rate there needs its own cap and a cap without a rate is a flat fee."""

    # null: brokerage is a flat brokerage_max_rupees per executed order (options).
    brokerage_pct: float | None = Field(default=None, ge=0, le=100)
    # With brokerage_pct: the cap per executed order (Zerodha: 20). Without: the flat fee.
    brokerage_max_rupees: float = Field(default=0.0, ge=0)
    stt_buy_pct: float = Field(default=0.0, ge=0, le=100)
    stt_sell_pct: float = Field(default=0.0, ge=0, le=100)
    exchange_txn_pct: float = Field(default=0.0, ge=0, le=100)
    stamp_buy_pct: float = Field(default=0.0, ge=0, le=100)

    @model_validator(mode="after")
    def _brokerage_stated(self) -> SegmentChargesConfig:
        if self.brokerage_pct != 0 and "brokerage_max_rupees" not in self.model_fields_set:
            what = (
                "the flat fee per executed order (brokerage_pct is null)"
                if self.brokerage_pct is None
                else f"the cap per executed order on brokerage_pct {self.brokerage_pct}"
            )
            raise ValueError(
                f"brokerage_max_rupees is required: {what}, e.g. 20 (Zerodha); "
                "set brokerage_pct: 0 for no brokerage"
            )
        return self


_BROKERAGE = frozenset({"brokerage_pct", "brokerage_max_rupees"})

ChargeSegment = Literal[
    "equity_delivery",
    "equity_intraday",
    "futures",
    "options",
    "bse_equity_delivery",
    "bse_equity_intraday",
    "bfo_futures",
    "bfo_options",
]


def _valid_row(row: object) -> bool:
    """Whether a merged segments row (NSE rows come first) passes its own validation."""
    if not isinstance(row, dict):
        return row is None  # left out (the default), or refused as given
    try:
        SegmentChargesConfig.model_validate(row)
    except ValidationError:
        return False
    return True


def _default_segments() -> dict[ChargeSegment, SegmentChargesConfig]:
    # Zerodha, https://zerodha.com/charges (NSE), rates in force from 2024-10-01: NSE
    # transaction charges per SEBI's "true to label" circular of 2024-07-01, STT on F&O
    # per the Finance (No. 2) Act 2024, stamp duty per the Indian Stamp Act (2020-07-01).
    # Check the page before relying on them: budgets change STT.
    return {
        # CNC: no brokerage; STT 0.1% both sides; stamp 0.015% on buys.
        "equity_delivery": SegmentChargesConfig(
            brokerage_pct=0.0,
            brokerage_max_rupees=0.0,
            stt_buy_pct=0.1,
            stt_sell_pct=0.1,
            exchange_txn_pct=0.00297,
            stamp_buy_pct=0.015,
        ),
        # MIS: 0.03% or Rs 20 per executed order; STT 0.025% on sells; stamp 0.003%.
        "equity_intraday": SegmentChargesConfig(
            brokerage_pct=0.03,
            brokerage_max_rupees=20.0,
            stt_sell_pct=0.025,
            exchange_txn_pct=0.00297,
            stamp_buy_pct=0.003,
        ),
        # Futures: 0.03% or Rs 20; STT 0.02% on sells; stamp 0.002%.
        "futures": SegmentChargesConfig(
            brokerage_pct=0.03,
            brokerage_max_rupees=20.0,
            stt_sell_pct=0.02,
            exchange_txn_pct=0.00173,
            stamp_buy_pct=0.002,
        ),
        # Options: flat Rs 20; STT 0.1% of the premium on sells; stamp 0.003%.
        "options": SegmentChargesConfig(
            brokerage_pct=None,
            brokerage_max_rupees=20.0,
            stt_sell_pct=0.1,
            exchange_txn_pct=0.03503,
            stamp_buy_pct=0.003,
        ),
        # BSE and BFO, in force from 2024-10-01 (as of 2026-12-02 no later revision was
        # found offline): the NSE rows' brokerage, STT, SEBI fee and stamp duty, and BSE's
        # own transaction charges. Zerodha's charges page, BSE column (read from a copy at
        # https://tradesee.in/stock-brokers/zerodha): equity 0.00375%, futures 0,
        # options 0.0325% of premium. BSE's circular of 2024-09-27 (Mint, "NSE, BSE
        # revise transaction fees effective from October 1", 2024-09-27): Sensex and
        # Bankex options Rs 3,250 a crore of premium (0.0325%), Sensex 50 and stock
        # options Rs 500 a crore (0.005%), index and stock futures nil; cash market
        # group A/B Rs 375 a crore (0.00375%) since 2022-12-01.
        "bse_equity_delivery": SegmentChargesConfig(
            brokerage_pct=0.0,
            brokerage_max_rupees=0.0,
            stt_buy_pct=0.1,
            stt_sell_pct=0.1,
            exchange_txn_pct=0.00375,
            stamp_buy_pct=0.015,
        ),
        "bse_equity_intraday": SegmentChargesConfig(
            brokerage_pct=0.03,
            brokerage_max_rupees=20.0,
            stt_sell_pct=0.025,
            exchange_txn_pct=0.00375,
            stamp_buy_pct=0.003,
        ),
        "bfo_futures": SegmentChargesConfig(
            brokerage_pct=0.03,
            brokerage_max_rupees=20.0,
            stt_sell_pct=0.02,
            exchange_txn_pct=0.0,
            stamp_buy_pct=0.002,
        ),
        # Sensex/Bankex options; Sensex 50 and stock options pay 0.005% (override).
        "bfo_options": SegmentChargesConfig(
            brokerage_pct=None,
            brokerage_max_rupees=20.0,
            stt_sell_pct=0.1,
            exchange_txn_pct=0.0325,
            stamp_buy_pct=0.003,
        ),
    }


class ChargesConfig(_Section):
    """Charges the paper simulator puts on each fill (venues/charges.py). Fills, orders
    and positions then report them, and positions their realized PnL net of them."""

    enabled: bool = False
    # SEBI turnover fee, rupees per crore (10 since 2022-06-01).
    sebi_per_crore: float = Field(default=10.0, ge=0)
    # GST on brokerage, exchange transaction charges and SEBI fees, in percent.
    gst_pct: float = Field(default=18.0, ge=0, le=100)
    # Rates by segment: equity_delivery, equity_intraday, futures, options (NSE/NFO),
    # bse_equity_delivery, bse_equity_intraday, bfo_futures, bfo_options (BSE/BFO). A
    # row given here is merged field by field over the default row of its segment: a
    # row overriding brokerage alone would otherwise drop STT, exchange charges and
    # stamp duty to 0. The rows left out keep the defaults (a table replacing the
    # defaults whole left CNC or NFO fills uncharged). The brokerage fields given on an
    # NSE row (brokerage_pct, brokerage_max_rupees) apply to its bse_/bfo_ row of the
    # same kind too, given or left out, unless that row gives either of them: the broker's
    # brokerage is the same on both exchanges, their transaction charges are not.
    segments: dict[ChargeSegment, SegmentChargesConfig] = Field(default_factory=_default_segments)

    @field_validator("segments", mode="before")
    @classmethod
    def _rows_over_their_defaults(cls, given: object) -> object:
        if not isinstance(given, dict):
            return given  # Not a table: the field's own validation says so.
        defaults = _default_segments()
        # A row built in Python is whole: every one of its fields counts as given.
        rows = {
            name: row.model_dump() if isinstance(row, SegmentChargesConfig) else row
            for name, row in given.items()
        }
        merged: dict[object, object] = {
            name: row  # An unknown segment or a bad row: refused as given.
            for name, row in rows.items()
            if name not in defaults or not isinstance(row, dict)
        }
        for name, default in defaults.items():
            if name in merged:
                continue
            row = rows.get(name, {})
            nse = rows.get(NSE_ROW.get(name))
            # Brokerage is the broker's, the same on NSE and BSE; exchange charges are
            # each exchange's, so a bse_/bfo_ row takes only brokerage from its NSE row,
            # and only when it states none itself (the two fields go together: a fee
            # alone must not become a cap on the NSE row's rate) and the NSE row is
            # valid (its mistake is reported once, against the row that has it).
            brokerage = (
                {k: v for k, v in nse.items() if k in _BROKERAGE}
                if isinstance(nse, dict)
                and not row.keys() & _BROKERAGE
                and _valid_row(merged.get(NSE_ROW.get(name)))
                else {}
            )
            stated = {**brokerage, **row}
            base = default.model_dump()
            if not stated:
                merged[name] = base  # Left out: the default row.
                continue
            if default.brokerage_pct == 0 and stated.keys() & _BROKERAGE:
                # No brokerage in the default, so none to inherit: its cap of 0 would cap
                # a rate given here at nothing, and its rate of 0 would turn a flat fee
                # given here into a cap on nothing. The row's brokerage is as given.
                for field in _BROKERAGE:
                    del base[field]
            merged[name] = {**base, **stated}
        return merged


class ExecutionConfig(_Section):
    # With mode: live, take every step of the live path except the broker call: orders
    # go to the dry-run venue, which has no way to reach the broker. Only the config
    # sets it; nothing over RPC can turn it off.
    dry_run: bool = False
    # What a dry-run order does once placed: `none` rests as placed; `simulate` fills
    # it with the paper simulator against the quotes (shadow trading).
    dry_run_fills: Literal["none", "simulate"] = "none"
    # An empty client_order_id is INVALID_ARGUMENT. Off, the gateway assigns
    # "auto-<order_id>" instead, and a retry of such a submit places a second order.
    require_client_order_id: bool = True
    slippage_bps: float = Field(default=5.0, ge=0, le=1_000)
    # The paper simulator's market model (paper mode and dry_run_fills: simulate).
    simulator: SimulatorConfig = SimulatorConfig()
    # An order above its instrument's freeze quantity (instruments.freeze_qty). `reject`:
    # the simulator rejects it (REJECT_REASON_BROKER, the limit in the message), as the
    # exchange does. `slice`: as Kite's autoslice, the gateway checks risk once for the
    # whole order, then places child orders of at most the freeze quantity (whole lots),
    # client_order_id "<parent>#1", "#2", ...; the result is their aggregate (see
    # engine.py). Paper mode only: with mode: live the gateway refuses to start.
    autoslice: Literal["reject", "slice"] = "reject"
    # Brokerage, taxes and fees on simulated fills; off by default (the seed's PnL).
    charges: ChargesConfig = ChargesConfig()
    # Equity for the drawdown breaker is capital plus the day's PnL.
    capital_rupees: float = Field(default=1_000_000.0, gt=0)
    circuit_breakers: CircuitBreakersConfig = CircuitBreakersConfig()
    pre_trade: PreTradeConfig = PreTradeConfig()


def _parse_hhmm(value: str) -> str:
    hours, sep, minutes = value.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit()):
        raise ValueError(f"must be HH:MM, got {value!r}")
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise ValueError(f"must be a time of day HH:MM, got {value!r}")
    return value


class TradingDayConfig(_Section):
    timezone: str = "Asia/Kolkata"
    # Local time at which one trading day ends and the next begins (counters reset).
    rollover: str = "08:00"
    # Local time after which MIS positions are flattened and MIS entries refused.
    # null turns square-off off (for venues that do it themselves, or round-the-clock tests).
    mis_square_off: str | None = "15:20"
    # How often the gateway checks the clock for rollover and square-off, in seconds.
    tick_interval_s: float = Field(default=1.0, gt=0, le=60)

    @field_validator("rollover", "mis_square_off")
    @classmethod
    def _time_of_day(cls, value: str | None) -> str | None:
        return None if value is None else _parse_hhmm(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class StreamConfig(_Section):
    # Events a subscriber may fall behind by before it is cut off with a resume point.
    queue_size: int = Field(default=4096, ge=16, le=1_000_000)


class TelemetryConfig(_Section):
    """Where spans and metrics go (README, "Telemetry"). Nothing here is a secret: the
    OTLP endpoint, headers and certificates come from the standard OTEL_EXPORTER_OTLP_*
    environment variables."""

    # none | console | jsonl (spans appended to `path`, one JSON object per line) |
    # otlp (spans and metrics to an OTLP/gRPC collector, OTEL_EXPORTER_OTLP_* env)
    exporter: Literal["none", "console", "jsonl", "otlp"] = "none"
    path: str = "var/traces.jsonl"
    service_name: str = Field(default="execgw", min_length=1, max_length=64)
    # The session every span, metric (resource attribute, exemplar) and log line of this
    # gateway belongs to, unless a call names its own (x-execgw-session metadata).
    # Empty: no session. 1-64 of A-Z a-z 0-9 . _ : - starting with a letter or digit.
    session_id: str = ""
    # HOST:PORT of a Prometheus text-format endpoint (GET /metrics); empty: none.
    prometheus_listen: str = ""

    @field_validator("session_id")
    @classmethod
    def _session(cls, value: str) -> str:
        # Here, not at the top: this section's edits stay inside it.
        from execgw.server.telemetry.attributes import SESSION_RULE, valid_session_id

        if value and not valid_session_id(value):
            raise ValueError(f"must be {SESSION_RULE}")
        return value

    @field_validator("prometheus_listen")
    @classmethod
    def _prometheus_host_port(cls, value: str) -> str:
        return _host_port(value) if value else value


class KiteBrokerConfig(_Section):
    # The Kite Connect REST root; tests and `make kite-demo` point it at a local stand-in.
    root: str = "https://api.kite.trade"
    # HOST:PORT of the postback (order update) endpoint; null: polling only.
    postback_listen: str | None = None
    # Seconds between polls of the order book while orders are working at the broker;
    # the fallback when a postback is lost, and the only source without postbacks.
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # market_protection sent with MARKET and SL-M orders: -1 lets the broker choose, or
    # a percentage from 1 to 100. Kite rejects such orders without it.
    market_protection: float = Field(default=-1)
    # Seconds one broker HTTP call may take; past it the outcome is ambiguous and is
    # resolved by looking the order up by its tag, never by sending it again.
    timeout_s: float = Field(default=7.0, gt=0, le=60)
    # How long an order whose placement is in doubt (no answer, then not in Kite's order
    # book) must stay absent from the book before it is settled as never placed.
    unresolved_grace_s: float = Field(default=30.0, gt=0, le=3600)
    # Kite's documented order rate limits, which the adapter shapes its calls under so a
    # burst is queued rather than refused with HTTP 429.
    orders_per_second: int = Field(default=10, ge=1, le=100)
    orders_per_minute: int = Field(default=400, ge=1, le=10_000)
    orders_per_day: int = Field(default=5_000, ge=1, le=1_000_000)
    # Concurrent broker HTTP calls at most (a bounded pool: the SDK is blocking).
    max_in_flight: int = Field(default=8, ge=1, le=64)
    # How long SubmitOrder waits for the broker's first answer (ack, rejection) before
    # answering with the order as it stands (SUBMITTED); the answer still arrives on
    # StreamFills.
    ack_wait_s: float = Field(default=10.0, ge=0, le=60)

    @field_validator("market_protection")
    @classmethod
    def _protection(cls, value: float) -> float:
        if value != -1 and not 1 <= value <= 100:
            raise ValueError("must be -1 (automatic) or a percentage from 1 to 100")
        return value

    @field_validator("postback_listen")
    @classmethod
    def _postback_host_port(cls, value: str | None) -> str | None:
        return None if value is None else _host_port(value)


class BrokerConfig(_Section):
    # Credentials are never here: KITE_API_KEY, KITE_API_SECRET and KITE_ACCESS_TOKEN
    # come from the environment only.
    kite: KiteBrokerConfig = KiteBrokerConfig()


MIB = 1024 * 1024


class TlsConfig(_Section):
    """PEM files the gateway serves TLS with (README, "TLS"). They are read at start-up;
    a file that is missing, unreadable or not what its key says stops start-up."""

    # The gateway's certificate chain, leaf first; its SANs must name the address
    # clients dial (an IP SAN for an IP target).
    cert_file: str = Field(min_length=1)
    # The private key of cert_file, unencrypted (gRPC takes no passphrase): mode 0600.
    key_file: str = Field(min_length=1)
    # CA bundle that client certificates must chain to. Set, every client must present
    # a certificate it signed (mTLS); unset, any client that trusts the gateway connects.
    client_ca_file: str | None = Field(default=None, min_length=1)


class ServerConfig(_Section):
    """What one caller can make the gateway hold: every limit here is hit with a clear
    status (README, "Limits"), never with growth."""

    # Seconds in-flight RPCs get to finish on SIGTERM before they are cancelled.
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=300)
    # RPCs in progress at once, streams included; one more is RESOURCE_EXHAUSTED. A call
    # whose client does not read its response, or never finishes sending its request,
    # stays in progress, so this also bounds what the gateway holds for such clients.
    max_concurrent_rpcs: int = Field(default=256, ge=3, le=100_000)
    # Server-streaming RPCs open at once (StreamFills, health Watch, reflection); one more
    # is RESOURCE_EXHAUSTED. Below max_concurrent_rpcs, so that subscribers never hold
    # every slot and orders can still be placed. PublishQuotes does not count.
    max_streams: int = Field(default=160, ge=1, le=100_000)
    # Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). gRPC
    # clients queue calls beyond it until one ends; a peer that sends them anyway has
    # them refused (REFUSED_STREAM, which gRPC reports as UNAVAILABLE). Below half of
    # max_concurrent_rpcs: gRPC counts a call from its headers, even if its request never
    # comes, and nothing times such a call out, so one connection must not be able to
    # hold every slot. gRPC channels of one process to one target share a connection.
    max_streams_per_connection: int = Field(default=120, ge=1, le=100_000)
    # TCP connections at once, handshaking ones included; the gateway closes more as it
    # accepts them (clients see UNAVAILABLE and reconnect with backoff).
    max_connections: int = Field(default=256, ge=1, le=100_000)
    # A connection that has not started HTTP/2 (sent its SETTINGS) this long after the
    # TCP accept is closed, so idle sockets cannot hold connection slots and descriptors.
    handshake_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # The gateway pings every connection this often, and closes one whose answer takes
    # longer than keepalive_timeout_s: a peer that stopped reading frees what it held.
    keepalive_time_s: float = Field(default=30.0, ge=1, le=7200)
    keepalive_timeout_s: float = Field(default=10.0, ge=1, le=600)
    # Largest message sent; a bigger response fails that call alone with RESOURCE_EXHAUSTED
    # instead of reaching a client that cannot take it (the clients' default receive limit
    # is 4 MiB). At least 1 MiB: a ListOrders page (at most 256 KiB) must fit.
    max_send_message_bytes: int = Field(default=4 * MIB, ge=MIB, le=1024 * MIB)
    # Largest request accepted; a bigger one is RESOURCE_EXHAUSTED before it is parsed.
    # A call whose request is still arriving holds up to this much (gRPC opens the flow
    # control window to the length the message announces).
    max_receive_message_bytes: int = Field(default=4 * MIB, ge=64 * 1024, le=1024 * MIB)
    # TLS (and mTLS with client_ca_file) on the listen port; null serves plaintext.
    tls: TlsConfig | None = None
    # Serve a non-loopback address without TLS or without auth anyway (with a loud
    # warning at start-up). Without it such a config refuses to start.
    insecure: bool = False

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_workers" in data:
            # Said plainly rather than "unknown key": the key was accepted before.
            raise ValueError(
                "max_workers was removed: RPC handlers run on the event loop, so there is no "
                "worker pool to size; delete the key"
            )
        return data

    @model_validator(mode="after")
    def _streams_leave_room(self) -> ServerConfig:
        if self.max_streams >= self.max_concurrent_rpcs:
            raise ValueError(
                f"max_streams ({self.max_streams}) must be below max_concurrent_rpcs "
                f"({self.max_concurrent_rpcs}), or open streams could refuse every order"
            )
        if 2 * self.max_streams_per_connection >= self.max_concurrent_rpcs:
            raise ValueError(
                f"max_streams_per_connection ({self.max_streams_per_connection}) must be "
                f"below half of max_concurrent_rpcs ({self.max_concurrent_rpcs}), or one "
                "connection could hold every call slot and refuse every order"
            )
        return self


Role = Literal["strategy", "operator", "market_data"]
ROLES: tuple[Role, ...] = ("strategy", "operator", "market_data")
TOKEN_NAME_RULE = (
    "must be 1-64 of letters, digits, '_', '.', '@', ':', '-', starting with a letter or digit"
)
_TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,63}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def valid_token_name(name: str) -> bool:
    return _TOKEN_NAME_RE.fullmatch(name) is not None


class TokenConfig(_Section):
    """One caller: the sha256 of its bearer token (never the token), its role and scope.

    The name is who the caller is: it is journaled as the actor of halts and resumes,
    as who placed an order, and with every refusal of its calls."""

    name: str
    # Not in the repr: a config printed in a log must not carry it.
    sha256: str = Field(repr=False)
    role: Role
    # The strategy codes a strategy token trades and reads; required for that role only.
    strategies: list[str] = Field(default_factory=list)
    # Overrides of the auth section's per-token defaults.
    max_streams: int | None = Field(default=None, ge=0, le=100_000)
    orders_per_second: float | None = Field(default=None, gt=0)
    order_burst: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not valid_token_name(value):
            raise ValueError(TOKEN_NAME_RULE)
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        # The message never echoes the value: a token pasted here by mistake stays unprinted.
        value = value.lower()
        if not _SHA256_RE.fullmatch(value):
            raise ValueError(
                "must be the 64 hex characters of the token's sha256, as `execgw token new` "
                "prints it (the value given is not shown)"
            )
        return value

    @field_validator("strategies")
    @classmethod
    def _strategy_codes(cls, value: list[str]) -> list[str]:
        for index, code in enumerate(value):
            try:
                validate_strategy_code(code, f"strategies[{index}]")
            except InvalidRequest as e:
                raise ValueError(str(e)) from None
        if len(set(value)) != len(value):
            raise ValueError("lists a strategy code twice")
        return value

    @model_validator(mode="after")
    def _scope_fits_role(self) -> TokenConfig:
        if self.role == "strategy" and not self.strategies:
            raise ValueError(
                f"token {self.name!r} has role strategy and no strategies: list the strategy "
                "codes it may trade"
            )
        if self.role != "strategy" and self.strategies:
            raise ValueError(
                f"token {self.name!r} has role {self.role}: strategies apply to the strategy "
                "role only"
            )
        return self


class AuthConfig(_Section):
    """Bearer tokens; with no `auth` section the gateway is open to every caller."""

    tokens: list[TokenConfig] = Field(min_length=1)
    # StreamFills calls one token may have open at once (a token's max_streams overrides).
    max_streams_per_token: int = Field(default=8, ge=0, le=100_000)
    # A token bucket per token, on top of the per-strategy ones (a token's own values
    # override): an order over it is REJECTED with ORDER_RATE.
    orders_per_second: float = Field(default=10.0, gt=0)
    order_burst: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _distinct(self) -> AuthConfig:
        names: set[str] = set()
        digests: dict[str, str] = {}
        for token in self.tokens:
            if token.name in names:
                raise ValueError(f"two tokens are named {token.name!r}; names must be unique")
            names.add(token.name)
            other = digests.setdefault(token.sha256, token.name)
            if other != token.name:
                raise ValueError(
                    f"tokens {other!r} and {token.name!r} have the same sha256: one token "
                    "cannot be two callers"
                )
        return self


def auth_enabled(config: GatewayConfig) -> bool:
    """True when callers must present a bearer token: an `auth` section (which holds at
    least one token). The one place the exposure rule (app.check_exposure) asks."""
    return config.auth is not None and bool(config.auth.tokens)


class GatewayConfig(_Section):
    mode: Literal["paper", "live"] = "paper"
    listen: str = "127.0.0.1:50051"
    journal: JournalConfig = JournalConfig()
    market_data: MarketDataConfig = MarketDataConfig()
    instruments: InstrumentsConfig = InstrumentsConfig()
    execution: ExecutionConfig = ExecutionConfig()
    trading_day: TradingDayConfig = TradingDayConfig()
    stream: StreamConfig = StreamConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    broker: BrokerConfig = BrokerConfig()
    server: ServerConfig = ServerConfig()
    # None: no authentication, every caller may do everything (the server warns at start).
    auth: AuthConfig | None = None

    @model_validator(mode="after")
    def _autoslice_paper_only(self) -> GatewayConfig:
        if self.mode == "live" and self.execution.autoslice == "slice":
            # A broker answers each child later; the submit path waits for one order's
            # answer, so a sliced live order would be reported by its first child only.
            raise ValueError(
                "execution.autoslice: slice is paper-only for now; use reject with mode: live"
            )
        return self

    @field_validator("listen")
    @classmethod
    def _listen_host_port(cls, value: str) -> str:
        host = _host_port(value).rpartition(":")[0]
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            # "::1:5005" reads as host ::1 here but as another address to gRPC.
            raise ValueError(f"an IPv6 host goes in brackets, as in [::1]:50051; got {value!r}")
        return value

    def with_overrides(self, **changes: Any) -> GatewayConfig:
        data = self.model_dump()
        data.update(changes)
        return parse_config(data, source="overrides")


def parse_config(data: object, *, source: str) -> GatewayConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(top level)"
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = _unknown_key(err["loc"])
            elif err["type"] == "missing":
                message = "required, and missing"
            problems.append(f"{key}: {message}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """ "unknown key 'x'", with the closest field of its section when one is close."""
    name = str(loc[-1]) if loc else ""
    section = _section_at(loc[:-1])
    known = list(section.model_fields) if section is not None else []
    close = difflib.get_close_matches(name, known, n=1)
    text = f"unknown key {name!r}"
    return f"{text}; did you mean {close[0]!r}?" if close else text


def _section_at(path: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The section model a validation error's location points into, if it can be told."""
    model: type[BaseModel] | None = GatewayConfig
    keyed = False  # the next part is a dict key or a list index, not a field
    for part in path:
        if keyed:
            keyed = False
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model, keyed = _model_in(model.model_fields[part].annotation)
    return model


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The section model inside a field's type, and whether a key or index comes first."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    keyed = typing.get_origin(annotation) in (dict, list, tuple, collections.abc.Mapping)
    for arg in typing.get_args(annotation):
        inner, inner_keyed = _model_in(arg)
        if inner is not None:
            return inner, keyed or inner_keyed
    return None, False


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if isinstance(data, dict):
        data = _paths_relative_to(data, path.parent)
    return parse_config(data, source=str(path))


# The file paths a config file may hold. A relative one is relative to the folder of the
# file that names it, not to the working directory, so the gateway finds the same
# journal wherever it is started from. The embedded defaults (no file) stay relative to
# the working directory.
CONFIG_FILE_PATHS = (
    ("journal", "path"),
    ("journal", "anchor", "path"),
    ("telemetry", "path"),
    ("instruments", "csv"),
    ("server", "tls", "cert_file"),
    ("server", "tls", "key_file"),
    ("server", "tls", "client_ca_file"),
)


def _paths_relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    data = dict(data)
    for dotted in CONFIG_FILE_PATHS:
        node = data
        for part in dotted[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node[part] = node = dict(child)
        else:
            value = node.get(dotted[-1])
            if isinstance(value, str) and value.startswith("~"):
                value = node[dotted[-1]] = os.path.expanduser(value)
            # Not a path (wrong type, empty, SQLite's ":memory:"): validation says so.
            relative = isinstance(value, str) and value and not Path(value).is_absolute()
            if relative and not str(value).startswith(":"):
                node[dotted[-1]] = os.path.normpath(folder / str(value))
    return data
