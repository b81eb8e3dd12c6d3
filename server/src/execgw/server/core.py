"""The gateway core: the single writer that owns all state.

Commands arrive on one queue and are executed one at a time by one asyncio task,
so the domain code needs no locks and every state change has a total order. The
task drains whatever is queued into a batch, executes it, makes the batch's events
durable in one journal transaction (group commit), and only then answers callers
and then publishes the events. A caller is never told about a change that could be lost.

If the journal write fails, the batch's callers get UNAVAILABLE and the in-memory
state is rebuilt from the journal, so memory never holds what the disk does not.

A bug hit while executing one command fails that command alone (INTERNAL for its
caller, logged with its ids): its half-applied effects are undone and the other
commands of the batch commit as usual.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from time import time_ns
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from execgw.server.bus import BusEvent, EventBus
from execgw.server.clock import Clock
from execgw.server.commands import (
    ApplyQuotes,
    ApplyVenueReports,
    Cancel,
    Command,
    GetOrder,
    GetPositions,
    GetRiskReport,
    Halt,
    ListOrders,
    PreviewOrder,
    RecordDenial,
    Resume,
    Submit,
    Tick,
)
from execgw.server.domain import Caller, Order, OrderIntent, OrderStatus, PositionView, Quote
from execgw.server.engine import (
    ExecutionEngine,
    HaltOutcome,
    Preview,
    QuotesOutcome,
    ResumeOutcome,
)
from execgw.server.errors import CommandFailed, GatewayError, GatewayUnavailable
from execgw.server.journal import Journal, JournalAltered, JournalRecord
from execgw.server.quotes import QuoteBook
from execgw.server.recovery import GatewayState, PreparedSnapshot, prepare_snapshot, rebuild
from execgw.server.risk import RiskEngine, RiskReport
from execgw.server.telemetry import attributes as attr
from execgw.server.telemetry.spans import tracer
from execgw.server.venues.base import Venue, VenueReport

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CoreSettings:
    # Commands committed per journal transaction at most; 1 means one fsync per command.
    max_batch: int = 512
    # Take a snapshot after this many events, so start-up replays a bounded tail.
    snapshot_every: int = 10_000
    # While the journal is failing, how often to retry a write without traffic.
    probe_interval_s: float = 0.5
    # Events kept for replay below the head; 0 keeps the whole journal.
    retain_events: int = 0
    # journal.record_quotes: journal the accepted quotes of each batch (QuotesRecorded).
    record_quotes: bool = False


@dataclass(slots=True)
class _Queued(Generic[R]):
    """A command on its way through the writer, with the future its caller awaits."""

    command: Command[R]
    future: asyncio.Future[R] = field(repr=False)
    # The caller's trace context, so the engine's spans nest under the RPC's span.
    trace_context: otel_context.Context = field(default_factory=otel_context.get_current)

    @property
    def name(self) -> str:
        return type(self.command).__name__


@dataclass(frozen=True, slots=True)
class _Stage:
    """When a batch-wide stage ran, and its own span when it has one."""

    start_ns: int
    end_ns: int
    span: trace.SpanContext | None


def _stage_spans(
    outcomes: list[tuple[_Queued[Any], Any, BaseException | None]],
    journal: _Stage,
    publish: _Stage,
    records: list[JournalRecord],
) -> None:
    """The journal and publish stages of each order the batch placed or cancelled, as
    spans of that order's own trace: batch-wide work, timed once, shown per order and
    linked to the batch's commit span. They carry each order as the whole batch left it
    (a later command of the batch may have filled it)."""
    latest: dict[str, Order] | None = None  # made once an order is traced
    # The batch's links, made once: every order's stage spans share them.
    stages = [
        (name, stage, () if stage.span is None else (trace.Link(stage.span),))
        for name, stage in ((attr.JOURNAL_STAGE, journal), (attr.PUBLISH_STAGE, publish))
    ]
    for queued, value, error in outcomes:
        if error is not None or not isinstance(queued.command, Submit | Cancel):
            continue
        if not isinstance(value, Order):
            continue
        # Its call's span may have ended already (callers are answered before the batch
        # is published): the stages still belong to its trace if it was recorded.
        call = trace.get_current_span(queued.trace_context)
        if not isinstance(call, ReadableSpan) or not call.get_span_context().trace_flags.sampled:
            continue  # not traced, or sampled out
        if latest is None:
            latest = _latest_orders(records)
        order = latest.get(value.order_id, value)
        attributes = {"execgw.order_id": order.order_id, "execgw.status": order.status.value}
        if order.reject_reason is not None:
            attributes["execgw.reject_reason"] = order.reject_reason.value
        for name, stage, links in stages:
            span = tracer.start_span(
                name,
                context=queued.trace_context,
                start_time=stage.start_ns,
                links=links,
                attributes=attributes,
            )
            span.end(end_time=stage.end_ns)


def _latest_orders(
    records: list[JournalRecord], wanted: Container[str] | None = None
) -> dict[str, Order]:
    """Each order (of `wanted`, or any) as the last of `records` about it left it."""
    return {
        r.order.order_id: r.order
        for r in records
        if r.order is not None and (wanted is None or r.order.order_id in wanted)
    }


_STOP = object()
# Rebuilds from the journal one batch may do to undo failed commands; see _execute_batch.
MAX_RECOVERIES_PER_BATCH = 2


class GatewayCore:
    def __init__(
        self,
        *,
        clock: Clock,
        journal: Journal,
        quotes: QuoteBook,
        venue: Venue,
        risk: RiskEngine,
        bus: EventBus,
        settings: CoreSettings = CoreSettings(),
        on_health: Callable[[bool], None] = lambda healthy: None,
        on_committed: Callable[[Sequence[JournalRecord]], None] = lambda records: None,
    ) -> None:
        """`on_committed` is handed every batch of records once durable, before any
        caller hears of them: a broker link makes the calls they ask for (the outbox)."""
        self._clock = clock
        self._journal = journal
        self._quotes = quotes
        self._bus = bus
        self._settings = settings
        self._on_health = on_health
        self._engine = ExecutionEngine(
            state=rebuild(journal, starting=True),
            clock=clock,
            quotes=quotes,
            venue=venue,
            risk=risk,
            record_quotes=settings.record_quotes,
        )
        self._on_committed = on_committed
        # Callers waiting for a venue's first answer to their order (see wait_for_venue).
        self._venue_waiters: dict[str, list[asyncio.Future[Order]]] = {}
        # The sequence of the last snapshot taken (due or written), and of the last written.
        self._last_snapshot = self._last_written = self._engine.state.sequence
        self._bus.head = self._engine.state.sequence
        self._inbox: asyncio.Queue[_Queued[Any] | object] = asyncio.Queue()
        # Commands a batch left unexecuted, run first by the next batch.
        self._carried: collections.deque[_Queued[Any]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        # Writes snapshots off the writer, one at a time; the next one due waits here.
        self._snapshotting: asyncio.Task[None] | None = None
        # Held while a snapshot is stored and the journal pruned, and while state is
        # rebuilt from the journal: the two must not interleave.
        self._snapshot_store = asyncio.Lock()
        self._snapshot_waiting: PreparedSnapshot | None = None
        self._accepting = False
        self._healthy = True
        self._fatal: GatewayUnavailable | None = None
        # Telemetry's observer of each durable commit: (seconds, records, commands).
        self.on_commit: Callable[[float, int, int], None] | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self, tick_interval_s: float | None = None) -> None:
        """Start the writer; with tick_interval_s, also a timer for time-driven events."""
        if self._task is None:
            self._accepting = True
            self._task = asyncio.create_task(self._run(), name="gateway-core")
            if tick_interval_s is not None:
                self._ticker = asyncio.create_task(self._tick_every(tick_interval_s), name="tick")

    async def stop(self) -> None:
        """Finish every queued command, then stop."""
        self._accepting = False
        for task in (self._probe, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        if self._task is not None:
            self._inbox.put_nowait(_STOP)
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._snapshotting is not None:
            with contextlib.suppress(Exception):
                await self._snapshotting
        # The last batch's publish is a callback queued by the writer: let it run, so
        # subscribers get every event before the bus closes.
        await asyncio.sleep(0)
        self._bus.close()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def head_sequence(self) -> int:
        return self._engine.state.sequence

    @property
    def bus(self) -> EventBus:
        return self._bus

    @property
    def queue_depth(self) -> int:
        """Commands waiting for the writer: queued, or carried over from a full batch."""
        return self._inbox.qsize() + len(self._carried)

    # -- commands (the only way state changes) ------------------------------

    async def submit(
        self, intent: OrderIntent, client_order_id: str, caller: Caller | None = None
    ) -> Order:
        return await self.run(Submit(intent, client_order_id, caller))

    async def cancel(self, order_id: str, scope: frozenset[str] | None = None) -> Order:
        return await self.run(Cancel(order_id, scope))

    async def record_denial(self, principal: str, rpc: str, reason: str, suppressed: int) -> None:
        await self.run(RecordDenial(principal, rpc, reason, suppressed))

    async def apply_quotes(self, quotes: list[Quote]) -> QuotesOutcome:
        return await self.run(ApplyQuotes(quotes))

    async def tick(self) -> None:
        await self.run(Tick())

    async def apply_venue_reports(self, reports: list[VenueReport]) -> None:
        await self.run(ApplyVenueReports(reports))

    async def wait_for_venue(self, order: Order, timeout_s: float) -> Order:
        """`order` once its venue has answered (acked, refused, filled, or ambiguous), or
        as it stands after `timeout_s`. Orders that are not SUBMITTED come back at once."""
        if order.status is not OrderStatus.SUBMITTED or timeout_s <= 0:
            return order
        future: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        waiters = self._venue_waiters.setdefault(order.order_id, [])
        waiters.append(future)
        try:
            # The answer may have been committed before the waiter was in place; a read
            # queued now sees everything committed before it.
            now = await self.get_order(order.order_id)
            if now.status is not OrderStatus.SUBMITTED:
                return now
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return await self.get_order(order.order_id)
        finally:
            waiters.remove(future)
            if not waiters:
                self._venue_waiters.pop(order.order_id, None)

    async def halt(self, strategy_code: str, actor: str, reason: str) -> HaltOutcome:
        return await self.run(Halt(strategy_code, actor, reason))

    async def resume(self, strategy_code: str, actor: str, reason: str) -> ResumeOutcome:
        return await self.run(Resume(strategy_code, actor, reason))

    # -- reads ------------------------------------------------------------
    # Reads go through the writer too: a batch answers only after its commit, so a
    # read never shows an order that could still be lost.

    async def get_order(self, order_id: str, scope: frozenset[str] | None = None) -> Order:
        return await self.run(GetOrder(order_id, scope))

    async def list_orders(
        self,
        *,
        strategy_code: str = "",
        status: OrderStatus | None = None,
        symbol: str = "",
        after: str = "",
        limit: int | None = None,
    ) -> tuple[list[Order], bool]:
        """One page of today's matching orders (see ExecutionEngine.list_orders)."""
        return await self.run(ListOrders(strategy_code, status, symbol, after, limit))

    async def positions(self, strategy_code: str = "") -> list[PositionView]:
        return await self.run(GetPositions(strategy_code))

    async def preview(self, intent: OrderIntent, caller: Caller | None = None) -> Preview:
        return await self.run(PreviewOrder(intent, caller))

    async def risk_report(self, strategy_code: str = "") -> RiskReport:
        return await self.run(GetRiskReport(strategy_code))

    def open_orders(self) -> list[Order]:
        """Copies of the open orders. Before start(), exactly the journal's; later, it may
        include a batch that is not durable yet."""
        ledger = self._engine.state.ledger
        return [ledger.snapshot(o.order_id) for o in ledger.open_orders()]

    def durable_marks(self) -> dict[str, Decimal]:
        """The journaled mark of each symbol that has one (positions, resting orders)."""
        return dict(self._engine.state.marks)

    def quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    # Read directly, not through the writer: the feed and health ask every fraction of a
    # second, and a stale answer by one batch costs nothing (nothing is decided on it).

    def exposure_symbols(self) -> frozenset[str]:
        """Symbols with an open position or resting order (the feed subscribes them)."""
        return self._engine.exposure_symbols()

    def quote_freshness(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The symbols watched for staleness, and those of them that are stale now."""
        exposure = self._engine.exposure_symbols()
        return self._quotes.watched_symbols(exposure), self._quotes.stale_symbols(exposure)

    def trading_day_of(self, when: datetime) -> date:
        return self._engine.calendar.trading_day(when)

    # -- the single writer ----------------------------------------------------

    async def run(self, command: Command[R]) -> R:
        """Queue `command` for the writer; its result once the batch it ran in is durable."""
        if self._fatal is not None:
            raise self._fatal
        if not self._accepting:
            raise GatewayUnavailable("gateway is shutting down")
        queued: _Queued[R] = _Queued(command, asyncio.get_running_loop().create_future())
        self._inbox.put_nowait(queued)
        # A caller that goes away cancels only this future: the writer runs every queued
        # command whatever its future's state, and answers only futures not done. (No
        # asyncio.shield: its second future and callbacks cost more than the rest here.)
        if not command.urgent:
            return await queued.future
        self._bus.order_started()
        try:
            return await queued.future
        finally:
            self._bus.order_finished()

    async def _run(self) -> None:
        stopping = False
        while True:
            batch: list[_Queued[Any] | object] = []
            while self._carried and len(batch) < self._settings.max_batch:
                batch.append(self._carried.popleft())
            if not batch:
                if stopping:
                    return
                first = await self._inbox.get()
                if first is _STOP:
                    return
                batch.append(first)
            while (
                not stopping and len(batch) < self._settings.max_batch and not self._inbox.empty()
            ):
                item = self._inbox.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            commands = [c for c in batch if isinstance(c, _Queued)]
            if self._fatal is not None:
                self._stop_taking_commands(self._fatal, commands)
                return
            try:
                await self._execute_batch(commands)
            except Exception as e:
                # Memory can no longer be trusted to match the journal (e.g. the rebuild
                # itself failed): refuse everything rather than guess. A restart recovers.
                log.critical("gateway core stopped: %s", e, exc_info=True)
                self._stop_taking_commands(
                    GatewayUnavailable(
                        "the gateway cannot rebuild its state from the journal and stopped "
                        "taking commands; restart it"
                    ),
                    commands,
                )
                return
            if stopping and not self._carried:
                return

    def _drain_inbox(self) -> list[_Queued[Any]]:
        drained = []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _Queued):
                drained.append(item)
        return drained

    async def _execute_batch(self, batch: list[_Queued[Any]]) -> None:
        outcomes: list[tuple[_Queued[Any], Any, BaseException | None]] = []
        recoveries = 0
        for index, command in enumerate(batch):
            if recoveries >= MAX_RECOVERIES_PER_BATCH:
                # Each recovery re-reads the journal: a flood of failing commands must not
                # stall the writer. The rest wait for the next batch, unexecuted.
                self._carried.extend(batch[index:])
                break
            start = self._engine.begin_command()
            try:
                outcomes.append((command, self._execute(command), None))
            except GatewayError as e:
                outcomes.append((command, None, e))
            except Exception as e:  # a bug: this command alone fails
                recovered, dropped = await self._drop_failed(command, start, e)
                recoveries += recovered
                outcomes.append((command, None, dropped))
        records = self._engine.take_pending()
        commit: _Stage | None = None
        if records:
            try:
                with tracer.start_as_current_span(
                    "execgw.journal.commit",
                    attributes={
                        "execgw.records": len(records),
                        "execgw.commands": len(batch),
                        "execgw.last_sequence": records[-1].sequence,
                    },
                ) as commit_span:
                    started = time.perf_counter()
                    commit_start = time_ns()
                    await asyncio.to_thread(self._journal.append, records)
                    # Timed whether or not the commit span is sampled: the orders' own
                    # traces may be.
                    linked = commit_span.get_span_context() if commit_span.is_recording() else None
                    commit = _Stage(commit_start, time_ns(), linked)
            except Exception as e:
                await self._journal_failed(e)
                failure = GatewayUnavailable(
                    "the journal write failed; retry with the same client_order_id once the "
                    "gateway reports SERVING: the retry returns the order if it was recorded "
                    "and places it at most once if not"
                )
                # Reads still answer, from the state rebuilt out of what is durable.
                outcomes = [
                    self._answer_again(c) if c.command.read_only else (c, None, failure)
                    for c, _, _ in outcomes
                ]
                records = []
            else:
                self._set_healthy(True)
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - started, len(records), len(batch))
        if records:
            try:
                self._on_committed(records)
            except Exception:  # the link's bug must not fail a batch that is durable
                log.exception("the venue link failed to take committed records")
        self._answer_venue_waiters(records)
        for command, value, error in outcomes:
            if command.future.done():
                continue
            if error is None:
                command.future.set_result(value)
            else:
                command.future.set_exception(error)
        if records:
            # Subscribers hear of the batch right after its callers: the callers' answers
            # were scheduled first, so fan-out to many subscribers never delays them. The
            # loop runs callbacks in order, so batches still reach the bus in order.
            asyncio.get_running_loop().call_soon(self._publish, records, outcomes, commit)
            self._maybe_snapshot()

    def _publish(
        self,
        records: list[JournalRecord],
        outcomes: list[tuple[_Queued[Any], Any, BaseException | None]],
        commit: _Stage | None,
    ) -> None:
        publish_start = time_ns()
        self._bus.publish([BusEvent(r.sequence, r.timestamp, r.event, r.order) for r in records])
        if commit is not None:
            _stage_spans(outcomes, commit, _Stage(publish_start, time_ns(), None), records)

    def _answer_venue_waiters(self, records: list[JournalRecord]) -> None:
        if not self._venue_waiters:
            return
        for order_id, order in _latest_orders(records, self._venue_waiters).items():
            if order.status is OrderStatus.SUBMITTED:
                continue
            for future in self._venue_waiters.get(order_id, []):
                if not future.done():
                    future.set_result(order)

    async def _drop_failed(
        self, command: _Queued[Any], start: int, error: Exception
    ) -> tuple[bool, CommandFailed]:
        """Undo whatever the failed command changed, keeping the batch's earlier commands.

        A command that failed before changing state only has its transient traces (rate
        token, duplicate window, ids, quotes) taken back. One that changed state halfway
        is undone by rebuilding from the journal and re-applying the earlier commands'
        records, which are not durable yet: they still commit. Returns whether a rebuild
        was needed."""
        log.error(
            "command %s failed and was dropped (%s); the rest of its batch goes on",
            command.name,
            command.command.ids() or "no ids",
            exc_info=error,
        )
        dirty = self._engine.dirty
        self._engine.undo_transient()
        if dirty:
            keep = self._engine.pending()[:start]
            durable = await self._rebuild()
            self._engine.recover(durable, keep)
        return dirty, CommandFailed(
            "internal error while executing this request; nothing of it was recorded "
            "and the gateway goes on. It was logged; a retry may fail the same way"
        )

    def _answer_again(
        self, command: _Queued[Any]
    ) -> tuple[_Queued[Any], Any, BaseException | None]:
        try:
            return command, self._execute(command), None
        except GatewayError as e:
            return command, None, e
        except Exception as e:  # a read cannot have changed anything: fail it alone
            log.error("read %s failed (%s)", command.name, command.command.ids(), exc_info=e)
            return command, None, CommandFailed("internal error while reading; it was logged")

    async def _journal_failed(self, error: Exception) -> None:
        log.error("journal write failed; failing closed: %s", error)
        self._set_healthy(False)
        await self._reload()
        if self._probe is not None:
            # A probe that succeeded just before this failure must not report healthy.
            self._probe.cancel()
        self._probe = asyncio.create_task(self._probe_until_writable(), name="journal-probe")

    async def _reload(self) -> None:
        """Memory may hold effects the disk does not: rebuild from what is durable."""
        self._engine.reload(await self._rebuild())

    async def _rebuild(self) -> GatewayState:
        """State from the journal. Never while a snapshot is stored or the journal pruned
        below it: a rebuild reads the latest snapshot, then the rows after it, in several
        reads, and a prune in between would leave it a gap (and stop the writer)."""
        async with self._snapshot_store:
            return await asyncio.to_thread(rebuild, self._journal)

    async def _probe_until_writable(self) -> None:
        while not self._healthy and self._accepting:
            await asyncio.sleep(self._settings.probe_interval_s)
            try:
                await asyncio.to_thread(self._journal.probe_writable)
            except Exception as e:
                log.warning("journal still not writable: %s", e)
            else:
                log.info("journal writable again")
                self._set_healthy(True)

    def _stop_taking_commands(
        self, error: GatewayUnavailable, commands: list[_Queued[Any]] | None = None
    ) -> None:
        """Refuse everything from now on with `error`: those given, carried or queued
        fail with it, health says NOT_SERVING for good (a restart recovers), and the
        writer's loop ends at its next batch."""
        self._fatal = error
        self._accepting = False
        self._set_healthy(False)
        if self._probe is not None:
            self._probe.cancel()
        for command in [*(commands or []), *self._carried, *self._drain_inbox()]:
            if not command.future.done():
                command.future.set_exception(error)
        self._carried.clear()

    def _set_healthy(self, healthy: bool) -> None:
        if healthy and self._fatal is not None:
            return  # stopped for good: a commit still in flight must not say SERVING
        if healthy != self._healthy:
            self._healthy = healthy
            self._on_health(healthy)

    async def snapshot_written(self) -> None:
        """Wait until the snapshot being written (and its pruning), if any, is done: for
        whoever reads the journal's snapshots while the gateway runs."""
        task = self._snapshotting
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def _maybe_snapshot(self) -> None:
        """Start a snapshot when one is due. The writer only prepares it (the orders
        changed since the last one are encoded; see prepare_snapshot); joining, sealing
        and storing it run in a thread while the writer goes on, so its pause does not
        grow with the day. It covers only durable events: it is taken after a commit.
        One is written at a time; a newer one due meanwhile waits, replacing any older
        one waiting, so the latest due is always written and the backlog is bounded."""
        state = self._engine.state
        if state.sequence - self._last_snapshot < self._settings.snapshot_every:
            return
        self._last_snapshot = state.sequence
        self._snapshot_waiting = prepare_snapshot(state, archiving=True)
        if self._snapshotting is None or self._snapshotting.done():
            self._snapshotting = asyncio.create_task(self._write_snapshots(), name="snapshots")

    async def _write_snapshots(self) -> None:
        while self._snapshot_waiting is not None:
            prepared, self._snapshot_waiting = self._snapshot_waiting, None
            await self._write_snapshot(prepared)

    async def _write_snapshot(self, prepared: PreparedSnapshot) -> None:
        async with self._snapshot_store:
            await self._store_and_prune(prepared)

    async def _store_and_prune(self, prepared: PreparedSnapshot) -> None:
        sequence = prepared.sequence
        try:
            await asyncio.to_thread(self._store_snapshot, prepared)
        except JournalAltered as e:
            # Not a full disk nor a failed read: the file was altered under the gateway
            # (snapshots or archived orders removed, put back or edited). Answers read
            # from it can no longer be trusted (a retry could place an order twice):
            # stop taking commands, as when a rebuild fails, until an operator restores it.
            log.critical("snapshot at %d refused, the journal was altered: %s", sequence, e)
            self._stop_taking_commands(
                GatewayUnavailable(
                    "the journal was altered under the gateway, which stopped taking "
                    "commands; check it with `execgw journal verify`, restore it, then restart"
                )
            )
            return
        except Exception as e:
            log.warning(
                "snapshot at %d failed (events are safe, start-up is slower): %s", sequence, e
            )
            if self._snapshot_waiting is None:
                # Due again at the next commit, as if it had not been taken.
                self._last_snapshot = self._last_written
            return
        self._last_written = sequence
        if prepared.archived is not None:
            # Stored in the archive: memory lets them go. Under the snapshot lock, so no
            # rebuild comes between (a rebuilt ledger's objects are others anyway).
            gone = self._engine.state.ledger.evict(prepared.finished, prepared.archived.day)
            log.debug("snapshot at %d archived %d finished orders", sequence, gone)
        if self._settings.retain_events:
            keep_from = min(sequence, sequence - self._settings.retain_events + 1)
            try:
                pruned = await asyncio.to_thread(self._journal.prune_before, keep_from)
            except Exception as e:
                log.warning("pruning the journal below %d failed: %s", keep_from, e)
            else:
                log.info("pruned %d journal events below %d", pruned, keep_from)

    def _store_snapshot(self, prepared: PreparedSnapshot) -> None:
        self._journal.write_snapshot(
            prepared.sequence, prepared.pieces(), archived=prepared.archived
        )

    def _execute(self, queued: _Queued[Any]) -> Any:
        token = otel_context.attach(queued.trace_context)
        try:
            return queued.command.run(self._engine)
        finally:
            otel_context.detach(token)

    async def _tick_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.tick()
            except Exception as e:  # the timer must outlive any one failed tick
                log.warning("tick failed: %s", e)
