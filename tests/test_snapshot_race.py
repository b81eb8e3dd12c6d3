"""A rebuild (after a command's bug) never interleaves with a snapshot being stored and
the journal pruned below it: the rebuild's reads would find a gap and stop the writer.
The journal's store and row reads are slowed (server side) only to widen the window."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient
from execgw.server.clock import ManualClock
from execgw.server.domain import OrderIntent, OrderType, Product, Side, Validity
from execgw.server.errors import CommandFailed

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish


def limit_buy(strategy_code: str) -> OrderIntent:
    return OrderIntent(
        INFY,
        strategy_code,
        Side.BUY,
        1,
        OrderType.LIMIT,
        Product.MIS,
        Validity.DAY,
        price=Decimal("1490.00"),
    )


def test_a_rebuild_waits_for_the_snapshot_and_its_pruning(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(
        tmp_path,
        journal={"path": str(tmp_path / "j.db"), "snapshot_every": 5, "retain_events": 1},
    )
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, 1500.0)
        core = running.gateway.core
        journal = running.gateway.journal

        async def batch(n: int, tag: str) -> None:
            await asyncio.gather(
                *[core.submit(limit_buy("honest"), f"{tag}-{i}") for i in range(n)]
            )

        running.call(batch(6, "a"))
        running.call(core.snapshot_written())
        pause = threading.Event()
        store, row = journal.write_snapshot, journal.row

        stored: list[int] = []

        def slow_store(sequence: int, body: Any, **options: Any) -> None:
            pause.wait(0.1)
            store(sequence, body, **options)
            stored.append(sequence)

        def slow_row(sequence: int) -> Any:
            pause.wait(0.3)
            return row(sequence)

        monkeypatch.setattr(journal, "write_snapshot", slow_store)
        monkeypatch.setattr(journal, "row", slow_row)
        venue = core._engine._venue
        on_new_order = venue.on_new_order

        def faulty(order: Any, *args: Any) -> Any:
            if order.intent.strategy_code == "poison":
                raise ArithmeticError("a bug in one command")
            return on_new_order(order, *args)

        monkeypatch.setattr(venue, "on_new_order", faulty)

        async def go() -> None:
            await batch(6, "b")  # a snapshot is due: stored in the background
            with pytest.raises(CommandFailed):
                await core.submit(limit_buy("poison"), "p")  # a rebuild, meanwhile
            await core.submit(limit_buy("honest"), "after")

        running.call(go())
        running.call(core.snapshot_written())
        assert core.healthy
        assert stored  # the snapshot raced the rebuild, and was stored
    finally:
        running.stop()
