"""StreamFills: replay from the journal, then live events, with no gap or duplicate.

The switch from replay to live is the delicate part. The stream first catches up
from the journal without holding a live subscription (so a long replay cannot
overflow a queue), then subscribes, reads the journal once more up to the bus head
at that moment, and only then takes live events, skipping any it already sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from typing import Any

import grpc

from execgw.server.api import convert
from execgw.server.bus import BusClosed, BusEvent, EventBus, SubscriberOverflow
from execgw.server.journal import Journal
from execgw.server.validation import InvalidRequest
from execgw.v1 import gateway_pb2, orders_pb2

Context = grpc.aio.ServicerContext[Any, Any]

# Records decoded per replay read: a subscriber that stops reading holds one batch, so
# it stays small (a batch of maximum-size orders is about 1.5 MiB).
REPLAY_BATCH = 64
DEFAULT_HEARTBEAT_S = 5.0
MIN_HEARTBEAT_MS = 50
RESUME_METADATA_KEY = "execgw-resume-from"
# Where a live event keeps its ExecutionEvent, shared by every stream (BusEvent.wire).
_WIRE_KEY = "execution_event"


def event_filter(request: gateway_pb2.StreamFillsRequest) -> Callable[[BusEvent], bool]:
    strategies = frozenset(request.strategy_codes)
    symbols = frozenset(request.symbols)
    include_updates = request.include_order_updates
    include_risk = request.include_risk_events

    def wanted(event: BusEvent) -> bool:
        if event.order is None:
            if not convert.is_streamed_risk_event(event.event):
                return False  # bookkeeping for restarts (peaks, marks), not news
            # Account-wide risk events concern every strategy.
            return include_risk and (
                not strategies or not event.strategy_code or event.strategy_code in strategies
            )
        if event.fill is None and not include_updates:
            return False
        if strategies and event.strategy_code not in strategies:
            return False
        return not symbols or event.symbol in symbols

    return wanted


def validate_heartbeat_interval(interval_ms: int) -> None:
    if interval_ms and interval_ms < MIN_HEARTBEAT_MS:
        raise InvalidRequest(
            "heartbeat_interval_ms", f"must be 0 (default) or >= {MIN_HEARTBEAT_MS}"
        )


class HistoryPruned(Exception):
    def __init__(self, oldest: int) -> None:
        super().__init__(f"events before {oldest} were pruned")
        self.oldest = oldest


class FillStream:
    """One subscriber's stream; `run` yields the responses."""

    def __init__(
        self,
        request: gateway_pb2.StreamFillsRequest,
        *,
        bus: EventBus,
        open_journal: Callable[[], Journal],
        trading_day_of: Callable[[datetime], date],
        default_heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        validate_heartbeat_interval(request.heartbeat_interval_ms)
        self._request = request
        self._bus = bus
        self._open_journal = open_journal
        self._trading_day_of = trading_day_of
        self._heartbeat_s = (
            request.heartbeat_interval_ms / 1000
            if request.heartbeat_interval_ms
            else default_heartbeat_s
        )
        self._wanted = event_filter(request)
        # The last sequence this stream has accounted for (sent or filtered out).
        self._last = 0
        self._last_sent = 0

    async def run(self, context: Context) -> AsyncIterator[gateway_pb2.StreamFillsResponse]:
        try:
            async for response in self._run(context):
                yield response
        except HistoryPruned as e:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"sequence {self._last + 1} is older than the retained journal; "
                f"the oldest sequence available is {e.oldest}",
                trailing_metadata=((RESUME_METADATA_KEY, str(e.oldest)),),
            )

    async def _run(self, context: Context) -> AsyncIterator[gateway_pb2.StreamFillsResponse]:
        start = self._request.from_sequence
        if start:
            await self._check_range(start, context)
            self._last = self._last_sent = start - 1
            async for response in self._replay():
                yield response
        else:
            self._last = self._last_sent = self._bus.head
        subscription = self._bus.subscribe(self._wanted)
        try:
            if start:
                async for response in self._replay(until=self._bus.head):
                    yield response
            yield self._heartbeat()
            while True:
                try:
                    event = await subscription.next(idle_s=self._heartbeat_s)
                except SubscriberOverflow:
                    resume = self._last_sent + 1
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"subscriber fell too far behind; resume with from_sequence={resume}",
                        trailing_metadata=((RESUME_METADATA_KEY, str(resume)),),
                    )
                except BusClosed:
                    if context.done():
                        return
                    # UNAVAILABLE, not OK: a following client should reconnect and resume.
                    resume = self._last + 1
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"gateway shutting down; resume with from_sequence={resume}",
                        trailing_metadata=((RESUME_METADATA_KEY, str(resume)),),
                    )
                if event is None:
                    if subscription.backlog:
                        continue  # an event landed as the idle timer fired: send it first
                    # Queue empty: every event up to the bus head was sent or filtered out.
                    self._last = max(self._last, self._bus.head)
                    yield self._heartbeat()
                elif event.sequence > self._last:
                    yield self._send(event)
        finally:
            subscription.unsubscribe()

    async def _check_range(self, start: int, context: Context) -> None:
        journal = await asyncio.to_thread(self._open_journal)
        try:
            oldest = await asyncio.to_thread(journal.oldest_sequence)
        finally:
            journal.close()
        head = self._bus.head
        if start > head + 1:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"from_sequence {start} is beyond the head sequence {head}",
            )
        if oldest and start < oldest:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"from_sequence {start} is older than the retained journal; "
                f"the oldest sequence available is {oldest}",
                trailing_metadata=((RESUME_METADATA_KEY, str(oldest)),),
            )

    async def _replay(
        self, until: int | None = None
    ) -> AsyncIterator[gateway_pb2.StreamFillsResponse]:
        journal = await asyncio.to_thread(self._open_journal)
        try:
            while until is None or self._last < until:
                limit = REPLAY_BATCH if until is None else min(REPLAY_BATCH, until - self._last)
                records = await asyncio.to_thread(journal.records_after, self._last, limit)
                if not records:
                    return
                if records[0].sequence != self._last + 1:
                    # Pruned while we replayed: say so; never pass a gap off as filtering.
                    raise HistoryPruned(records[0].sequence)
                for record in records:
                    event = BusEvent(record.sequence, record.timestamp, record.event, record.order)
                    if self._wanted(event):
                        yield self._send(event)
                    else:
                        self._last = record.sequence
        finally:
            journal.close()

    def _send(self, event: BusEvent) -> gateway_pb2.StreamFillsResponse:
        shared = event.wire.get(_WIRE_KEY)
        if shared is None:
            # The event's own trading day: a replayed halt from yesterday says yesterday.
            shared = convert.event(event, self._trading_day_of(event.timestamp))
            event.wire[_WIRE_KEY] = shared
        response = gateway_pb2.StreamFillsResponse()
        # A copy (in C): `filtered` is this stream's own, and the shared message stays
        # as built for the other subscribers.
        response.event.CopyFrom(shared)
        response.event.filtered = event.sequence - self._last_sent - 1
        self._last = self._last_sent = event.sequence
        return response

    def _heartbeat(self) -> gateway_pb2.StreamFillsResponse:
        return gateway_pb2.StreamFillsResponse(
            event=orders_pb2.ExecutionEvent(
                heartbeat=orders_pb2.Heartbeat(head_sequence=self._last)
            )
        )
