"""One bad command fails alone: a bug hit while executing one command of a group-commit
batch answers that caller INTERNAL, and the other commands of the batch commit.

The fault is injected into the real engine of a real gateway; the batch is built by
queueing 100 commands on the core's loop before its writer runs, so all of them share
one journal transaction (the test checks that it did).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import AsyncExecutionClient, ExecutionClient, Internal, market
from execgw.server import core as core_module
from execgw.server.clock import ManualClock
from execgw.server.domain import Order, OrderIntent, OrderType, Product, Quote, Side, Validity
from execgw.server.errors import CommandFailed
from execgw.server.journal import Journal, JournalRecord
from execgw.server.recovery import rebuild
from execgw.v1 import market_data_pb2

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway, make_config
else:
    from conftest import MARKET_OPEN, RunningGateway, make_config

POISON = "poison"


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target) as client:
            client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
        yield gateway
    finally:
        gateway.stop()


class Observed:
    """Batch sizes the journal committed and how many times state was rebuilt from disk."""

    def __init__(self, running: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        self.rebuilds = 0
        journal = running.gateway.journal
        append: Callable[[list[JournalRecord]], None] = journal.append

        def counting_append(records: list[JournalRecord]) -> None:
            append(records)
            self.batches.append(len({r.order.order_id for r in records if r.order}))

        def counting_rebuild(journal: Journal) -> Any:
            self.rebuilds += 1
            return rebuild(journal)

        monkeypatch.setattr(journal, "append", counting_append)
        monkeypatch.setattr(core_module, "rebuild", counting_rebuild)


def _limit(strategy_code: str) -> OrderIntent:
    return OrderIntent(
        symbol="NSE:INFY",
        strategy_code=strategy_code,
        side=Side.BUY,
        qty=1,
        order_type=OrderType.LIMIT,
        product=Product.MIS,
        validity=Validity.DAY,
        price=Decimal("1490.00"),
    )


def _submit_batch(running: RunningGateway, poison_at: int) -> list[Order | BaseException]:
    core = running.gateway.core

    async def batch() -> list[Order | BaseException]:
        calls = [
            core.submit(_limit(POISON if i == poison_at else "honest"), f"iso-{i}")
            for i in range(100)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    result: list[Order | BaseException] = running.call(batch())
    return result


def _poison(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
    """Make `target.name` raise, as a bug would, for the poison strategy's orders only."""
    original = getattr(target, name)

    def faulty(*args: Any, **kwargs: Any) -> Any:
        for arg in (*args, *kwargs.values()):
            intent = getattr(arg, "intent", arg)
            if isinstance(intent, OrderIntent) and intent.strategy_code == POISON:
                raise ArithmeticError("injected fault")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, faulty)


def _check_99_committed(running: RunningGateway, results: list[Order | BaseException]) -> None:
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1, failed
    assert isinstance(failed[0], CommandFailed)
    placed = [r for r in results if isinstance(r, Order)]
    assert len(placed) == 99
    assert all(o.intent.strategy_code == "honest" for o in placed)
    # Durable, not just answered: a rebuild from the journal has exactly those 99.
    durable = rebuild(running.gateway.journal)
    ids = sorted(o.client_order_id for o in durable.ledger.orders())
    assert ids == sorted(o.client_order_id for o in placed)
    assert "iso-50" not in ids


def test_a_fault_before_any_change_fails_one_command_and_rebuilds_nothing(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed = Observed(running, monkeypatch)
    # Pre-trade checks run before the engine changes anything.
    _poison(monkeypatch, running.gateway.core._engine._risk, "check")
    results = _submit_batch(running, poison_at=50)
    _check_99_committed(running, results)
    assert observed.batches == [99], "the 100 commands did not share one commit"
    assert observed.rebuilds == 0


def test_a_fault_after_a_half_applied_change_is_undone_and_the_rest_commits(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed = Observed(running, monkeypatch)
    engine = running.gateway.core._engine
    # The simulator is called after OrderAccepted was folded into state: half-applied.
    _poison(monkeypatch, engine._venue, "on_new_order")
    results = _submit_batch(running, poison_at=50)
    _check_99_committed(running, results)
    assert observed.batches == [99]
    # Memory matches the journal: the half-accepted order left no trace.
    assert engine.state.ledger.order_for_client_id(POISON, "iso-50") is None
    assert engine.state.sequence == running.gateway.journal.head_sequence
    assert len(engine.state.ledger.open_orders()) == 99


def test_the_caller_of_the_failed_command_gets_internal_and_others_are_served(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison(monkeypatch, running.gateway.core._engine._risk, "check")

    async def flood() -> list[Any]:
        async with AsyncExecutionClient(running.target, retries=0) as client:
            calls = [
                client.submit(
                    market("NSE:INFY", "BUY", 1, strategy_code=POISON if i == 7 else "honest"),
                    f"rpc-{i}",
                )
                for i in range(40)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(flood())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, Internal)
    assert "Traceback" not in str(error)
    assert "ArithmeticError" not in str(error)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 39
    with ExecutionClient(running.target) as client:
        assert len(client.list_orders(strategy_code="honest")) == 39


@pytest.fixture
def windowed(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    config = make_config(
        tmp_path,
        execution={"pre_trade": {"duplicate_window_s": 60.0, "order_burst": 2}},
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target) as client:
            client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
        yield gateway
    finally:
        gateway.stop()


def test_a_dropped_command_leaves_no_rate_token_duplicate_window_or_order_id_behind(
    windowed: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed order used no rate token, opened no duplicate window and drew no id, so
    its retry is placed as if the failure had never happened."""
    core = windowed.gateway.core
    simulator = core._engine._venue
    original = simulator.on_new_order
    failures = iter([True])

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        if next(failures, False):
            raise ArithmeticError("injected fault")
        return original(*args, **kwargs)

    monkeypatch.setattr(simulator, "on_new_order", fail_once)
    intent = _limit(POISON)
    with pytest.raises(CommandFailed):
        windowed.call(core.submit(intent, "retry-1"))
    retried: Order = windowed.call(core.submit(intent, "retry-1"))
    assert retried.status.value == "PLACED", retried.message
    assert retried.order_id == "O0000000001"
    # Burst 2, and the clock stands still: the failed attempt must not have spent one.
    third = windowed.call(core.submit(replace(intent, qty=2), "retry-2"))
    assert third.status.value == "PLACED", third.message


def test_a_flood_of_failing_commands_cannot_stall_the_writer_for_a_whole_batch(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each half-applied failure costs a rebuild; one batch does at most two and carries
    the rest of its commands over, so honest commands commit between rebuilds."""
    observed = Observed(running, monkeypatch)
    _poison(monkeypatch, running.gateway.core._engine._venue, "on_new_order")
    core = running.gateway.core

    async def batch() -> list[Order | BaseException]:
        calls = [
            core.submit(_limit(POISON if i % 2 else "honest"), f"flood-{i}") for i in range(40)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results: list[Order | BaseException] = running.call(batch())
    assert sum(isinstance(r, CommandFailed) for r in results) == 20
    assert sum(isinstance(r, Order) for r in results) == 20
    assert observed.rebuilds == 20
    assert len(observed.batches) >= 10, observed.batches
    assert all(size <= 2 for size in observed.batches), observed.batches


def test_a_failed_quote_command_leaves_the_quote_book_as_it_was(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = running.gateway.core
    simulator = core._engine._venue

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ArithmeticError("injected fault")

    monkeypatch.setattr(simulator, "on_quote", broken)
    moved = Quote(symbol="NSE:INFY", ltp=Decimal("1600.00"), timestamp=MARKET_OPEN)
    with pytest.raises(CommandFailed):
        running.call(core.apply_quotes([moved]))
    quote = core.quote("NSE:INFY")
    assert quote is not None
    assert quote.ltp == Decimal("1500.0")


def test_the_quote_book_holds_a_bounded_number_of_symbols(
    tmp_path: Path, clock: ManualClock
) -> None:
    gateway = RunningGateway(make_config(tmp_path, market_data={"max_symbols": 3}), clock)
    try:
        quotes = [
            Quote(symbol=f"NSE:S{i}", ltp=Decimal("100.00"), timestamp=MARKET_OPEN)
            for i in range(5)
        ]
        outcome = gateway.call(gateway.gateway.core.apply_quotes(quotes))
        assert [r.position for r in outcome.refused] == [3, 4]
        assert "maximum of 3 symbols" in outcome.refused[0].reason
        assert gateway.gateway.core.quote("NSE:S4") is None
    finally:
        gateway.stop()


def test_a_caller_that_goes_away_leaves_its_queued_command_to_run(
    running: RunningGateway,
) -> None:
    """A caller cancelled while its order waits for the writer (the client left, its
    deadline passed) cancels its wait, not the order: the order is placed, journaled
    with its batch, and every other caller of the batch is answered."""
    core = running.gateway.core

    async def batch() -> list[Order | BaseException]:
        calls = [
            asyncio.ensure_future(core.submit(_limit("honest"), f"gone-{i}")) for i in range(10)
        ]
        await asyncio.sleep(0)  # every call has queued its command; none has run yet
        calls[3].cancel()
        return await asyncio.gather(*calls, return_exceptions=True)

    results: list[Order | BaseException] = running.call(batch())
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(isinstance(r, Order) for i, r in enumerate(results) if i != 3)
    durable = rebuild(running.gateway.journal)
    ids = {o.client_order_id for o in durable.ledger.orders()}
    assert {f"gone-{i}" for i in range(10)} <= ids
