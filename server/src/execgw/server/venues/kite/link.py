"""The Kite venue's I/O: the calls the journal asks for, and the broker's answers.

Runs beside the core, never inside it. The SDK is blocking HTTP, so every call runs in
a bounded thread pool; answers go back into the core as VenueReports, journaled like
everything else.

- **Outbox.** A place_order is made only for an OrderSubmitted record that is durable
  (`committed`). A crash before the answer leaves that record; `start` then looks the
  order up in Kite's order book by its tag. It is never sent twice.
- **Ambiguity.** A call that may have reached Kite without an answer (a read timeout,
  a dropped connection, a 5xx) leaves the order AMBIGUOUS. Polls look for its tag; it
  is settled when found, or refused as never placed once it has stayed absent for
  longer than any request could still be on its way.
- **Updates.** Postbacks (checksum-verified) and polls of the order book go through
  one path per order: trades are fetched by the broker's order id and reported by
  trade id, so the same execution told twice is applied once.
- **Rate.** Order calls wait for OrderRateShaper, so a burst queues here instead of
  meeting HTTP 429; a 429 that still comes (another app on the same key) is retried
  after a pause, since Kite did not take the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import requests
from kiteconnect import exceptions as kite_errors

from execgw.server.clock import Clock
from execgw.server.config import KiteBrokerConfig
from execgw.server.domain import Order, OrderStatus
from execgw.server.events import CancelRequested, OrderSubmitted, VenueAccepted
from execgw.server.journal import JournalRecord
from execgw.server.venues import base
from execgw.server.venues.base import ReportSink, VenueReport
from execgw.server.venues.kite import mapping
from execgw.server.venues.kite.rate_limit import DailyCapReached, OrderRateShaper
from execgw.server.venues.kite.venue import VENUE_NAME

log = logging.getLogger(__name__)
T = TypeVar("T")

# Kite's order book and trade times are Indian Standard Time without a zone.
KITE_ZONE = ZoneInfo("Asia/Kolkata")
# A 429 means Kite did not take the order: wait this long (doubling) and try again.
RATE_LIMITED_RETRIES = 5
RATE_LIMITED_PAUSE_S = 1.0
PAISA = Decimal("0.01")
# Postback fields that are about the delivery, not the order: left out of `raw`.
_DELIVERY_FIELDS = ("checksum", "user_id", "app_id", "unfilled_quantity")


class KiteApi(Protocol):
    """The part of `kiteconnect.KiteConnect` this link uses."""

    def place_order(self, **params: Any) -> Any: ...
    def cancel_order(self, variety: str, order_id: str) -> Any: ...
    def orders(self) -> Any: ...
    def order_history(self, order_id: str) -> Any: ...
    def order_trades(self, order_id: str) -> Any: ...


@dataclass(slots=True)
class _Tracked:
    """What the link knows of one order working at Kite."""

    order_id: str
    tag: str
    request: dict[str, Any]
    status: OrderStatus
    venue_order_id: str = ""
    filled_qty: int = 0
    trade_ids: set[str] = field(default_factory=set)
    placing: bool = False
    cancelling: bool = False
    # Monotonic time the last cancel call went out; a working order still PENDING_CANCEL
    # long after it gets the cancel again (a cancel is safe to repeat).
    cancel_sent_at: float | None = None
    # Monotonic time since when the order's placement is in doubt and it was not found.
    missing_since: float | None = None
    # (status, filled, message) last reported, so an unchanged order is not re-sent.
    last_seen: tuple[str, int, str] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Outcome:
    """How a failed call left things at Kite."""

    REFUSED = "refused"  # Kite answered no: nothing was placed or changed
    UNKNOWN = "unknown"  # it may have been carried out
    RATE_LIMITED = "rate_limited"  # HTTP 429: not carried out, may be retried
    SESSION = "session"  # the access token is no good: nothing carried out


def classify(error: BaseException) -> tuple[str, str]:
    """(outcome, message for the order) of a failed Kite call. Messages never carry the
    request: the URL and headers stay out of results and logs."""
    if isinstance(error, kite_errors.TokenException):
        return _Outcome.SESSION, f"broker session rejected: {error}"
    if isinstance(error, kite_errors.KiteException):
        code = getattr(error, "code", 500)
        if code == 429:
            return _Outcome.RATE_LIMITED, f"broker rate limit: {error}"
        if isinstance(error, kite_errors.NetworkException | kite_errors.DataException):
            return _Outcome.UNKNOWN, f"broker answer unclear ({type(error).__name__}): {error}"
        if code >= 500 and isinstance(error, kite_errors.GeneralException):
            return _Outcome.UNKNOWN, f"broker error {code}: {error}"
        return _Outcome.REFUSED, str(error)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return _Outcome.REFUSED, "broker unreachable (connect timeout): the order was not sent"
    if isinstance(error, requests.exceptions.ConnectionError) and _never_connected(error):
        return _Outcome.REFUSED, "broker unreachable (connection refused): the order was not sent"
    if isinstance(error, requests.exceptions.Timeout):
        return _Outcome.UNKNOWN, "no answer from the broker in time"
    if isinstance(error, requests.exceptions.RequestException):
        return _Outcome.UNKNOWN, "the connection to the broker failed before its answer"
    return _Outcome.UNKNOWN, f"unexpected failure calling the broker ({type(error).__name__})"


def _never_connected(error: requests.exceptions.ConnectionError) -> bool:
    from urllib3.exceptions import NewConnectionError

    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


class KiteLink:
    def __init__(
        self,
        *,
        kite: KiteApi,
        settings: KiteBrokerConfig,
        report: ReportSink,
        clock: Clock,
        today: Callable[[], date],
        on_session_lost: Callable[[str], None] = lambda message: None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._kite = kite
        self._settings = settings
        self._report = report
        self._clock = clock
        self._today = today
        self._day: date | None = None
        self._on_session_lost = on_session_lost
        self._monotonic = monotonic
        self._sleep = sleep
        self._shaper = OrderRateShaper(
            per_second=settings.orders_per_second,
            per_minute=settings.orders_per_minute,
            per_day=settings.orders_per_day,
            monotonic=monotonic,
            sleep=sleep,
        )
        self._pool = ThreadPoolExecutor(settings.max_in_flight, thread_name_prefix="kite")
        self._tracked: dict[str, _Tracked] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._session_lost = False
        self._stopped = False
        # How long an order in doubt must stay absent from the book to count as never placed.
        self._grace_s = max(
            settings.unresolved_grace_s, settings.timeout_s + 2 * settings.poll_interval_s
        )
        # Tags of orders settled as never placed, still looked for all day: one that turns
        # up after all is a break between the journal and the broker an operator must fix.
        self._abandoned: dict[str, str] = {}
        self.place_calls = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, open_orders: Sequence[Order]) -> None:
        for order in open_orders:
            if order.venue == VENUE_NAME and not order.dry_run:
                tracked = self._track(order, {})
                if not order.venue_order_id:
                    # The gateway stopped before Kite's answer: in doubt, from now.
                    tracked.missing_since = self._monotonic()
        if self._tracked:
            log.info("reconciling %d open orders with Kite's order book", len(self._tracked))
            await self.poll_once()
        self._poller = asyncio.create_task(self._poll_forever(), name="kite-poll")

    async def stop(self) -> None:
        self._stopped = True
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the outbox ------------------------------------------------------------------

    def committed(self, records: Sequence[JournalRecord]) -> None:
        if self._stopped:
            # Left SUBMITTED in the journal: the next start finds them by tag.
            return
        for record in records:
            order = record.order
            if order is None or order.venue != VENUE_NAME or order.dry_run:
                continue
            if isinstance(record.event, OrderSubmitted):
                placing = self._track(order, dict(record.event.request))
                placing.placing = True
                self._spawn(self._place(placing))
                continue
            tracked = self._tracked.get(order.order_id)
            if tracked is None:
                continue
            self._follow(tracked, order)
            if not order.status.is_open:
                del self._tracked[order.order_id]
            elif order.status is OrderStatus.PENDING_CANCEL and isinstance(
                record.event, CancelRequested | VenueAccepted
            ):
                self._cancel_when_known(tracked)

    def _cancel_when_known(self, tracked: _Tracked) -> None:
        # Without Kite's id yet, the cancel goes once the ack is in (VenueAccepted).
        if tracked.venue_order_id and not tracked.cancelling:
            tracked.cancelling = True
            tracked.cancel_sent_at = self._monotonic()
            self._spawn(self._cancel(tracked))

    def _cancel_again_if_due(self, tracked: _Tracked) -> None:
        sent = tracked.cancel_sent_at
        if sent is None or self._monotonic() - sent >= self._settings.timeout_s:
            self._cancel_when_known(tracked)

    def _track(self, order: Order, request: dict[str, Any]) -> _Tracked:
        tracked = _Tracked(
            order.order_id,
            mapping.order_tag(order.intent.strategy_code, order.client_order_id),
            request,
            order.status,
        )
        self._follow(tracked, order)
        self._tracked[order.order_id] = tracked
        return tracked

    @staticmethod
    def _follow(tracked: _Tracked, order: Order) -> None:
        tracked.status = order.status
        tracked.venue_order_id = order.venue_order_id
        tracked.filled_qty = order.filled_qty
        tracked.trade_ids = set(order.venue_trade_ids)
        if order.venue_order_id:
            tracked.missing_since = None

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))

    def _order_slot(self, *, new_order: bool = True) -> AbstractAsyncContextManager[None]:
        """The order call made inside it is within Kite's rate limits (OrderRateShaper)."""
        today = self._today()
        if today != self._day:
            self._day = today
            self._shaper.new_day()
        # Cancels share the rate windows but never the daily cap: a halt must be able
        # to cancel after the last order of the day.
        return self._shaper.slot(count_daily=new_order)

    async def _place(self, tracked: _Tracked) -> None:
        try:
            report = await self._place_once(tracked)
        finally:
            tracked.placing = False
        await self._send([report])

    async def _place_once(self, tracked: _Tracked) -> VenueReport:
        order_id = tracked.order_id
        pause = RATE_LIMITED_PAUSE_S
        for attempt in range(RATE_LIMITED_RETRIES + 1):
            try:
                async with self._order_slot():
                    self.place_calls += 1
                    venue_order_id = await self._call(self._kite.place_order, **tracked.request)
            except DailyCapReached as e:
                return base.Refused(order_id, str(e))
            except Exception as e:
                outcome, message = classify(e)
                if outcome == _Outcome.RATE_LIMITED and attempt < RATE_LIMITED_RETRIES:
                    log.warning("Kite answered 429 to order %s; retrying in %.1fs", order_id, pause)
                    await self._sleep(pause)
                    pause *= 2
                    continue
                if outcome == _Outcome.SESSION:
                    self._session_expired(message)
                if outcome == _Outcome.UNKNOWN:
                    log.warning("order %s: outcome unknown (%s); looking it up", order_id, message)
                    tracked.missing_since = self._monotonic()
                    return base.Unknown(order_id, f"{message}; looking the order up by its tag")
                return base.Refused(order_id, message)
            return base.Acked(order_id, str(venue_order_id))
        raise AssertionError("unreachable")

    async def _cancel(self, tracked: _Tracked) -> None:
        try:
            try:
                async with self._order_slot(new_order=False):
                    await self._call(
                        self._kite.cancel_order,
                        variety=mapping.VARIETY,
                        order_id=tracked.venue_order_id,
                    )
            except Exception as e:
                outcome, message = classify(e)
                if outcome == _Outcome.SESSION:
                    self._session_expired(message)
                if outcome in (_Outcome.REFUSED, _Outcome.SESSION):
                    await self._send([base.CancelFailed(tracked.order_id, message)])
                # Unknown or rate-limited: the next poll sees the order still working
                # and sends the cancel again.
                return
            # Kite confirms a cancel in the order's state: look now, not at the next poll.
            history = await self._call(self._kite.order_history, order_id=tracked.venue_order_id)
            if history:
                await self.sync(tracked, history[-1])
        except Exception as e:
            log.warning("cancel of %s: %s", tracked.order_id, classify(e)[1])
        finally:
            tracked.cancelling = False

    # -- updates ---------------------------------------------------------------------

    async def on_postback(self, body: dict[str, Any]) -> None:
        """A postback whose checksum was verified."""
        tracked = self._find(str(body.get("order_id") or ""), str(body.get("tag") or ""))
        if tracked is None:
            log.info("postback for order %r, not one the gateway follows", body.get("order_id"))
            return
        await self.sync(tracked, body)

    def _find(self, venue_order_id: str, tag: str) -> _Tracked | None:
        for tracked in self._tracked.values():
            if venue_order_id and tracked.venue_order_id == venue_order_id:
                return tracked
        for tracked in self._tracked.values():
            if tag and tracked.tag == tag:
                return tracked
        return None

    async def poll_once(self) -> None:
        """Compare every followed order with Kite's order book, and report differences."""
        waiting = [t for t in self._tracked.values() if not t.placing]
        if not waiting:
            return
        try:
            book = await self._call(self._kite.orders)
        except Exception as e:
            outcome, message = classify(e)
            if outcome == _Outcome.SESSION:
                self._session_expired(message)
            log.warning("polling Kite's order book failed: %s", message)
            return
        by_id = {str(o.get("order_id")): o for o in book or []}
        by_tag = {str(o.get("tag")): o for o in book or [] if o.get("tag")}
        for tag in [t for t in self._abandoned if t in by_tag]:
            log.critical(
                "order %s was settled as never placed, but Kite now shows it (order_id %s, "
                "status %s): the journal and the broker disagree; reconcile it by hand",
                self._abandoned.pop(tag),
                by_tag[tag].get("order_id"),
                by_tag[tag].get("status"),
            )
        for tracked in waiting:
            found = by_id.get(tracked.venue_order_id) if tracked.venue_order_id else None
            found = found or by_tag.get(tracked.tag)
            if found is not None:
                await self.sync(tracked, found)
            elif not tracked.venue_order_id:
                # Placed (or not) without an answer: only the book can tell.
                await self._not_in_book(tracked)

    async def _not_in_book(self, tracked: _Tracked) -> None:
        now = self._monotonic()
        if tracked.missing_since is None:
            tracked.missing_since = now
        if tracked.status is OrderStatus.SUBMITTED:
            await self._send(
                [base.Unknown(tracked.order_id, "not in the broker's order book yet; looking")]
            )
        elif now - tracked.missing_since >= self._grace_s:
            self._abandoned[tracked.tag] = tracked.order_id
            await self._send(
                [
                    base.Refused(
                        tracked.order_id,
                        f"the broker has no order with tag {tracked.tag} after "
                        f"{self._grace_s:.0f}s: it was never placed, and is not sent again",
                    )
                ]
            )

    async def sync(self, tracked: _Tracked, kite_order: dict[str, Any]) -> None:
        """Report what Kite's view of the order adds to ours: trades first, then state."""
        async with tracked.lock:
            state = mapping.order_state(kite_order)
            message = mapping.order_message(kite_order)
            filled = _int(kite_order.get("filled_quantity"))
            seen = (str(kite_order.get("status")), filled, message)
            if state == base.WORKING and tracked.status is OrderStatus.PENDING_CANCEL:
                # A cancel that was lost, timed out or refused for the rate: again.
                self._cancel_again_if_due(tracked)
            if (
                seen == tracked.last_seen
                and tracked.venue_order_id
                and (tracked.filled_qty >= filled)
            ):
                return
            venue_order_id = str(kite_order.get("order_id") or "")
            trades: list[base.Traded] = []
            if filled > tracked.filled_qty and venue_order_id:
                trades = await self._new_trades(tracked, venue_order_id)
            # Kite's trade book can lag its order book, and a trades call can fail: until
            # the trades account for every filled unit, the order is looked at again.
            accounted = tracked.filled_qty + sum(t.qty for t in trades) >= filled
            raw = {k: v for k, v in mapping.plain(kite_order).items() if k not in _DELIVERY_FIELDS}
            status = base.StatusSeen(tracked.order_id, venue_order_id, state, message, raw)
            reports: list[VenueReport]
            if state in (base.WORKING, base.DONE):
                # The state first (the ack, Kite's record), so the fill that completes
                # the order finds both in place.
                reports = [status, *trades]
            elif accounted:
                # A cancel or rejection last, after the fills before it.
                reports = [*trades, status]
            else:
                # Closing the order now would lose the fills still missing.
                reports = list(trades)
            if reports and await self._send(reports) and accounted:
                tracked.last_seen = seen

    async def _new_trades(self, tracked: _Tracked, venue_order_id: str) -> list[base.Traded]:
        try:
            trades = await self._call(self._kite.order_trades, order_id=venue_order_id)
        except Exception as e:
            log.warning("trades of %s: %s", tracked.order_id, classify(e)[1])
            return []
        found: list[base.Traded] = []
        for trade in trades or []:
            trade_id = str(trade.get("trade_id") or "")
            if not trade_id or trade_id in tracked.trade_ids:
                continue
            try:
                price = Decimal(str(trade.get("average_price")))
            except InvalidOperation:
                log.error("trade %s of %s has no usable price", trade_id, tracked.order_id)
                continue
            if _exponent(price) > -2:
                # Kite's JSON drops trailing zeros (1500.0, 1500): rupees to the paisa.
                price = price.quantize(PAISA)
            when = _kite_time(trade.get("fill_timestamp") or trade.get("exchange_timestamp"))
            found.append(
                base.Traded(
                    tracked.order_id,
                    trade_id,
                    _int(trade.get("quantity")),
                    price,
                    when or self._clock.now(),
                )
            )
        return found

    async def _send(self, reports: list[VenueReport]) -> bool:
        try:
            await self._report(reports)
        except Exception as e:
            # The order book still has it: the next poll reports it again.
            log.warning("could not hand %d broker reports to the core: %s", len(reports), e)
            return False
        return True

    async def _poll_forever(self) -> None:
        while True:
            await self._sleep(self._settings.poll_interval_s)
            try:
                await self.poll_once()
            except Exception:
                log.exception("polling Kite failed")

    def _session_expired(self, message: str) -> None:
        if not self._session_lost:
            self._session_lost = True
            self._on_session_lost(message)


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _kite_time(value: object) -> datetime | None:
    when: datetime
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=KITE_ZONE)
    return when.astimezone(UTC)
