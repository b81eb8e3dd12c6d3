"""Kite's WebSocket ticker as a quote source (market_data.source: kite).

Two tasks, so that the socket and the single writer never wait on each other:
- the reader keeps one connection open (reconnecting with capped exponential backoff,
  and resubscribing every wanted symbol in mode full each time), parses binary frames
  and puts the quotes in a bounded buffer;
- the pump hands the buffer to the core (`apply_quotes`) one batch at a time, so at
  most one feed command is ever queued in the writer.

If the writer falls behind, the buffer keeps only the latest quote of each symbol
rather than growing; if the feed is lost, the writer never notices except that quotes
age, which the quote book reports as stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect

from execgw.server.clock import Clock
from execgw.server.config import KITE_MAX_SUBSCRIPTIONS, KiteTickerConfig
from execgw.server.domain import Quote
from execgw.server.marketdata.kite_binary import MalformedFrame, Mode, parse_frame
from execgw.server.marketdata.kite_credentials import KiteCredentials
from execgw.server.marketdata.kite_instruments import TokenDirectory
from execgw.server.marketdata.kite_quotes import UnusableTick, tick_to_quote

log = logging.getLogger(__name__)

# Quotes per apply_quotes command: big enough to keep up, small enough that an order
# queued behind one waits a few milliseconds at most.
MAX_BATCH = 2_000
# Quotes held for the writer at most; past it only the latest of each symbol is kept.
MAX_PENDING = 20_000
# How often the wanted symbols (config plus open positions and orders) are compared
# with the subscribed ones, on a live connection.
SUBSCRIPTION_CHECK_S = 1.0
# Kite's frames are a few KiB; a bigger one is no ticker frame.
MAX_FRAME_BYTES = 1 << 20


class Sleep(Protocol):
    def __call__(self, delay: float, /) -> Awaitable[object]: ...


class AppliesQuotes(Protocol):
    """What the core answers apply_quotes with (engine.QuotesOutcome)."""

    @property
    def accepted(self) -> int: ...


Publish = Callable[[list[Quote]], Awaitable[AppliesQuotes]]


class Backoff:
    """Capped exponential: initial, twice that, four times... up to maximum; `reset`
    starts over."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._failures = 0

    def next_delay(self) -> float:
        # min() before the power grows past a float: the exponent is capped too.
        delay = min(self._maximum, self._initial * (1 << min(self._failures, 60)))
        self._failures += 1
        return delay

    def reset(self) -> None:
        self._failures = 0


@dataclass(slots=True)
class FeedStats:
    """Counters since start-up, for health, logs and the benchmark."""

    connected: bool = False
    connections: int = 0
    frames: int = 0
    ticks: int = 0
    # Quotes the quote book accepted (the price band may refuse some).
    applied: int = 0
    malformed_frames: int = 0
    unknown_packets: int = 0
    unusable_ticks: int = 0
    # Quotes dropped because a later one of the same symbol replaced them while the
    # writer was behind.
    conflated: int = 0
    subscribed: frozenset[str] = field(default_factory=frozenset)


class KiteTickerFeed:
    def __init__(
        self,
        *,
        config: KiteTickerConfig,
        credentials: KiteCredentials,
        directory: TokenDirectory,
        wanted: Callable[[], Iterable[str]],
        publish: Publish,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._config = config
        self._credentials = credentials
        self._directory = directory
        self._wanted = wanted
        self._publish = publish
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._ws_log = credentials.logger(f"{__name__}.websocket")
        self._pending: list[Quote] = []
        self._ready = asyncio.Event()
        # token -> symbol of what the current connection subscribed.
        self._by_token: dict[int, str] = {}
        # Symbols already reported as impossible to subscribe, so each is said once.
        self._unsubscribable: set[str] = set()
        self.stats = FeedStats()

    @property
    def connected(self) -> bool:
        return self.stats.connected

    async def run(self) -> None:
        """Read the ticker until cancelled, reconnecting for ever."""
        pump = asyncio.create_task(self._pump(), name="kite-ticker-pump")
        try:
            while True:
                if await self._connection():
                    self._backoff.reset()
                delay = self._backoff.next_delay()
                log.warning("Kite ticker: reconnecting in %gs", delay)
                await self._sleep(delay)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    # -- the connection ---------------------------------------------------

    async def _connection(self) -> bool:
        """One connection, until it ends; whether it delivered any frame."""
        delivered = False
        config = self._config
        try:
            async with connect(
                self._credentials.ticker_url(config.ws_root),
                open_timeout=config.connect_timeout_s,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                proxy=None,
                logger=self._ws_log,
            ) as ws:
                self.stats.connected = True
                self.stats.connections += 1
                self._by_token = {}
                added = await self._subscribe(ws)
                log.info(
                    "Kite ticker connected to %s: %d instruments in mode full",
                    config.ws_root,
                    added,
                )
                keeper = asyncio.create_task(self._keep_subscribed(ws), name="kite-subscribe")
                try:
                    while True:
                        try:
                            async with asyncio.timeout(config.silence_timeout_s):
                                frame = await ws.recv()
                        except TimeoutError:
                            log.warning(
                                "Kite ticker: nothing received for %gs (not even a heartbeat); "
                                "dropping the connection",
                                config.silence_timeout_s,
                            )
                            return delivered
                        delivered = True
                        self._on_frame(frame)
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the socket, the handshake, a timeout: all mean reconnect
            what = "lost" if self.stats.connected else "failed"
            log.warning("Kite ticker connection %s: %s", what, self._describe(e))
        finally:
            self.stats.connected = False
            self.stats.subscribed = frozenset()
        return delivered

    def _describe(self, error: BaseException) -> str:
        # Library messages can carry the URL, and so the credentials: always redacted.
        text = str(error) or "no detail"
        return self._credentials.redact(f"{type(error).__name__}: {text}")

    async def _subscribe(self, ws: ClientConnection) -> int:
        """Subscribe what is wanted and not yet subscribed, in mode full; how many."""
        new: dict[int, str] = {}
        for symbol in sorted(set(self._wanted())):
            if symbol in self.stats.subscribed:
                continue
            token = self._directory.token(symbol)
            if token is None:
                self._cannot_subscribe(symbol, "it has no instrument token")
                continue
            if len(self._by_token) + len(new) >= KITE_MAX_SUBSCRIPTIONS:
                self._cannot_subscribe(
                    symbol, f"a connection takes {KITE_MAX_SUBSCRIPTIONS} instruments at most"
                )
                continue
            new[token] = symbol
        if new:
            tokens = sorted(new)
            # Subscribe first, then the mode: Kite applies a mode to subscribed tokens only.
            await ws.send(json.dumps({"a": "subscribe", "v": tokens}))
            await ws.send(json.dumps({"a": "mode", "v": [Mode.FULL.value, tokens]}))
            self._by_token.update(new)
            self.stats.subscribed = frozenset(self._by_token.values())
        return len(new)

    def _cannot_subscribe(self, symbol: str, why: str) -> None:
        if symbol not in self._unsubscribable:
            self._unsubscribable.add(symbol)
            log.warning("Kite ticker cannot stream %s: %s", symbol, why)

    async def _keep_subscribed(self, ws: ClientConnection) -> None:
        """Subscribe symbols that become wanted (a position or order in a new symbol)."""
        while True:
            await asyncio.sleep(SUBSCRIPTION_CHECK_S)
            try:
                added = await self._subscribe(ws)
            except Exception as e:  # the reader sees the closed connection and reconnects
                log.debug("Kite ticker subscription update failed: %s", self._describe(e))
                return
            if added:
                log.info("Kite ticker: subscribed %d more instruments", added)

    # -- frames -----------------------------------------------------------

    def _on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            self._on_text(frame)
            return
        stats = self.stats
        stats.frames += 1
        try:
            parsed = parse_frame(frame)
        except MalformedFrame as e:
            stats.malformed_frames += 1
            if _is_power_of_ten(stats.malformed_frames):
                log.warning(
                    "Kite ticker: malformed frame skipped (%d so far): %s",
                    stats.malformed_frames,
                    e,
                )
            return
        if parsed.unknown_packets:
            stats.unknown_packets += parsed.unknown_packets
            log.debug("Kite ticker: %d packets of unknown length skipped", parsed.unknown_packets)
        if not parsed.ticks:
            return  # a heartbeat
        now = self._clock.now()
        for tick in parsed.ticks:
            symbol = self._by_token.get(tick.instrument_token)
            if symbol is None:
                continue  # not ours (yet, or any more)
            stats.ticks += 1
            try:
                self._pending.append(tick_to_quote(tick, symbol, now))
            except UnusableTick as e:
                stats.unusable_ticks += 1
                if _is_power_of_ten(stats.unusable_ticks):
                    log.warning(
                        "Kite ticker: tick skipped (%d so far): %s", stats.unusable_ticks, e
                    )
        if len(self._pending) > MAX_PENDING:
            self._conflate()
        self._ready.set()

    def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.debug("Kite ticker: a text message that is not JSON was ignored")
            return
        if isinstance(message, dict) and message.get("type") == "error":
            detail = self._credentials.redact(str(message.get("data", ""))[:500])
            log.warning("Kite ticker error message: %s", detail)

    def _conflate(self) -> None:
        latest = {q.symbol: q for q in self._pending}
        dropped = len(self._pending) - len(latest)
        self.stats.conflated += dropped
        log.warning(
            "Kite ticker: the writer is behind; kept the latest quote of each of %d symbols "
            "and dropped %d older ones",
            len(latest),
            dropped,
        )
        self._pending = list(latest.values())

    async def _pump(self) -> None:
        failures = 0
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                try:
                    outcome = await self._publish(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # e.g. the journal is failing: later quotes retry
                    failures += 1
                    if _is_power_of_ten(failures):
                        log.warning("Kite ticker quotes not applied (%d times): %s", failures, e)
                else:
                    self.stats.applied += outcome.accepted


def _is_power_of_ten(n: int) -> bool:
    """The 1st, 10th, 100th...: a repeating problem is logged without flooding."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
