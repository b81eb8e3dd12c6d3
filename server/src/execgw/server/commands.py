"""Commands: typed values that cross into the single writer.

Each command names its result type and knows which engine method carries it out, so
the path from a servicer through the core's queue to the engine is typed end to end,
with no command names as strings and no dispatch by attribute lookup.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from execgw.server.domain import Caller, Order, OrderIntent, OrderStatus, PositionView, Quote
from execgw.server.engine import (
    ExecutionEngine,
    HaltOutcome,
    Preview,
    QuotesOutcome,
    ResumeOutcome,
)
from execgw.server.risk import RiskReport
from execgw.server.venues.base import VenueReport

R = TypeVar("R", covariant=True)


class Command(ABC, Generic[R]):
    # A read changes nothing at all (not even time-driven state), so after a failed
    # commit it can be answered again from the state rebuilt out of the journal.
    read_only: ClassVar[bool] = False
    # A caller waits on it with money at stake (an order, a cancel, the kill switch):
    # while one is in the core, stream sends make room for it (EventBus.order_started).
    urgent: ClassVar[bool] = False

    @abstractmethod
    def run(self, engine: ExecutionEngine) -> R: ...

    def ids(self) -> str:
        """The ids an operator needs to find this request in the log, never its payload."""
        return ""


@dataclass(frozen=True, slots=True)
class Submit(Command[Order]):
    urgent: ClassVar[bool] = True

    intent: OrderIntent
    client_order_id: str
    # The authenticated caller; None with auth off.
    caller: Caller | None = None

    def run(self, engine: ExecutionEngine) -> Order:
        return engine.submit(self.intent, self.client_order_id, self.caller)

    def ids(self) -> str:
        return (
            f"strategy_code={self.intent.strategy_code!r} symbol={self.intent.symbol!r} "
            f"client_order_id={self.client_order_id!r}"
        )


@dataclass(frozen=True, slots=True)
class Cancel(Command[Order]):
    urgent: ClassVar[bool] = True

    order_id: str
    # The strategy codes the caller may act for; None: any.
    scope: frozenset[str] | None = None

    def run(self, engine: ExecutionEngine) -> Order:
        return engine.cancel(self.order_id, self.scope)

    def ids(self) -> str:
        return f"order_id={self.order_id!r}"


@dataclass(frozen=True, slots=True)
class ApplyQuotes(Command[QuotesOutcome]):
    quotes: list[Quote]

    def run(self, engine: ExecutionEngine) -> QuotesOutcome:
        return engine.apply_quotes(self.quotes)

    def ids(self) -> str:
        return f"{len(self.quotes)} quotes"


@dataclass(frozen=True, slots=True)
class ApplyVenueReports(Command[None]):
    """A broker's answers (acks, trades, statuses), brought in by its link."""

    reports: list[VenueReport]

    def run(self, engine: ExecutionEngine) -> None:
        engine.apply_venue_reports(self.reports)

    def ids(self) -> str:
        order_ids = sorted({r.order_id for r in self.reports})
        return f"{len(self.reports)} venue reports for {', '.join(order_ids[:5])}"


@dataclass(frozen=True, slots=True)
class Tick(Command[None]):
    def run(self, engine: ExecutionEngine) -> None:
        engine.tick()


@dataclass(frozen=True, slots=True)
class Halt(Command[HaltOutcome]):
    urgent: ClassVar[bool] = True

    strategy_code: str
    actor: str
    reason: str

    def run(self, engine: ExecutionEngine) -> HaltOutcome:
        return engine.halt(self.strategy_code, self.actor, self.reason)

    def ids(self) -> str:
        return f"strategy_code={self.strategy_code!r} actor={self.actor!r}"


@dataclass(frozen=True, slots=True)
class Resume(Command[ResumeOutcome]):
    strategy_code: str
    actor: str
    reason: str

    def run(self, engine: ExecutionEngine) -> ResumeOutcome:
        return engine.resume(self.strategy_code, self.actor, self.reason)

    def ids(self) -> str:
        return f"strategy_code={self.strategy_code!r} actor={self.actor!r}"


@dataclass(frozen=True, slots=True)
class PreviewOrder(Command[Preview]):
    intent: OrderIntent
    caller: Caller | None = None

    def run(self, engine: ExecutionEngine) -> Preview:
        return engine.preview(self.intent, self.caller)


@dataclass(frozen=True, slots=True)
class RecordDenial(Command[None]):
    """Journal that an authenticated caller was refused (AccessDenied)."""

    principal: str
    rpc: str
    reason: str
    # Refusals of this principal left out of the journal since its previous record.
    suppressed: int = 0

    def run(self, engine: ExecutionEngine) -> None:
        engine.record_denial(self.principal, self.rpc, self.reason, self.suppressed)

    def ids(self) -> str:
        return f"principal={self.principal!r} rpc={self.rpc!r}"


@dataclass(frozen=True, slots=True)
class GetRiskReport(Command[RiskReport]):
    strategy_code: str = ""

    def run(self, engine: ExecutionEngine) -> RiskReport:
        return engine.risk_report(self.strategy_code)


@dataclass(frozen=True, slots=True)
class GetOrder(Command[Order]):
    read_only: ClassVar[bool] = True
    order_id: str
    scope: frozenset[str] | None = None

    def run(self, engine: ExecutionEngine) -> Order:
        return engine.get_order(self.order_id, self.scope)

    def ids(self) -> str:
        return f"order_id={self.order_id!r}"


@dataclass(frozen=True, slots=True)
class ListOrders(Command[tuple[list[Order], bool]]):
    read_only: ClassVar[bool] = True
    strategy_code: str = ""
    status: OrderStatus | None = None
    symbol: str = ""
    after: str = ""
    limit: int | None = None

    def run(self, engine: ExecutionEngine) -> tuple[list[Order], bool]:
        return engine.list_orders(
            self.strategy_code, self.status, self.symbol, self.after, self.limit
        )


@dataclass(frozen=True, slots=True)
class GetPositions(Command[list[PositionView]]):
    read_only: ClassVar[bool] = True
    strategy_code: str = ""

    def run(self, engine: ExecutionEngine) -> list[PositionView]:
        return engine.positions(self.strategy_code)
