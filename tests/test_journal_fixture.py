"""Journals written by earlier versions still load, to the same state.

tests/fixtures/journal_v2 was written by the version before the declaration-derived
codec (tools/make_journal_fixture.py), through a real gateway: every event type but
BaselineMarked (see the tool), a snapshot, and the state that version rebuilt. This
version must rebuild the same state from it, from the snapshot and from events alone.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from execgw.server import codec
from execgw.server.domain import TradingState
from execgw.server.events import TradingHalted
from execgw.server.journal import Journal, JournalRecord
from execgw.server.recovery import GatewayState, rebuild, state_from_json, state_to_json

FIXTURE = Path(__file__).parent / "fixtures" / "journal_v2"


@pytest.fixture
def journal_copy(tmp_path: Path) -> Path:
    target = tmp_path / "journal.db"
    shutil.copyfile(FIXTURE / "journal.db", target)
    target.chmod(0o600)
    return target


def _rebuild(path: Path) -> GatewayState:
    journal = Journal(path, read_only=True)
    try:
        return rebuild(journal)
    finally:
        journal.close()


def _expected() -> GatewayState:
    return state_from_json((FIXTURE / "expected_state.json").read_text(encoding="utf-8"))


def _as_json(value: object) -> object:
    """Parsed JSON with one spelling of UTC, so text order and `Z`/`+00:00` don't matter."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, str) and value.endswith("+00:00"):
        return value[: -len("+00:00")] + "Z"
    return value


# Order fields declared after the fixture was written, and the default each must have
# in a state rebuilt from it.
ORDER_FIELDS_ADDED_SINCE: dict[str, object] = {
    "placed_by": "",
    "venue": "",
    "venue_order_id": "",
    "venue_trade_ids": [],
    "charges": "0",
    "arrived": False,
    "brokerage": "0",
    "fills_in_flight": [],
    "cancel_requested_at": None,
}
# The same for positions.
POSITION_FIELDS_ADDED_SINCE: dict[str, object] = {"charges": "0"}
# And for the snapshot's own fields.
STATE_FIELDS_ADDED_SINCE: dict[str, object] = {"liquidity": []}


def _without_added_fields(state: dict[str, Any]) -> dict[str, Any]:
    for order in state["orders"]:
        for name, default in ORDER_FIELDS_ADDED_SINCE.items():
            assert order.pop(name) == default, (order["order_id"], name)
    for position in state["positions"]:
        for name, default in POSITION_FIELDS_ADDED_SINCE.items():
            assert position.pop(name) == default, (position["symbol"], name)
    for name, default in STATE_FIELDS_ADDED_SINCE.items():
        assert state.pop(name) == default, name
    return state


def test_the_rebuilt_state_equals_the_file_the_previous_version_wrote(
    journal_copy: Path,
) -> None:
    """Compared with the file itself, not with this version's reading of it."""
    written = json.loads((FIXTURE / "expected_state.json").read_text(encoding="utf-8"))
    rebuilt = _without_added_fields(json.loads(state_to_json(_rebuild(journal_copy))))
    assert _as_json(rebuilt) == _as_json(written)


def test_the_fixture_holds_a_snapshot_and_every_kind_of_event_it_claims(
    journal_copy: Path,
) -> None:
    with sqlite3.connect(journal_copy) as db:
        kinds = {row[0] for row in db.execute("SELECT DISTINCT kind FROM events")}
        snapshots = db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0]
    assert snapshots == 1
    assert len(kinds) == 12, kinds


def test_a_journal_written_by_the_previous_codec_rebuilds_to_the_same_state(
    journal_copy: Path,
) -> None:
    rebuilt = _rebuild(journal_copy)
    assert rebuilt.replayed > 0, "the snapshot should cover only part of the journal"
    assert state_to_json(rebuilt) == state_to_json(_expected())


def test_events_alone_rebuild_the_same_state_as_the_snapshot_plus_events(
    journal_copy: Path,
) -> None:
    with sqlite3.connect(journal_copy) as db:
        db.execute("DELETE FROM snapshots")
    assert state_to_json(_rebuild(journal_copy)) == state_to_json(_expected())


def test_a_writer_appends_to_an_old_journal_and_both_kinds_of_row_read_back(
    journal_copy: Path,
) -> None:
    before = _rebuild(journal_copy)
    journal = Journal(journal_copy)
    try:
        old = journal.records_after(0, 10_000)
        halt = TradingHalted("S9", "ops", "appended by this version", old[-1].timestamp)
        journal.append([JournalRecord(journal.head_sequence + 1, halt.timestamp, halt, None)])
    finally:
        journal.close()
    after = _rebuild(journal_copy)
    assert after.sequence == before.sequence + 1
    assert after.risk.state("S9") is TradingState.HALTED
    reread = Journal(journal_copy, read_only=True)
    try:
        assert [r.event for r in reread.records_after(0, 10_000)] == [
            *(r.event for r in old),
            halt,
        ]
    finally:
        reread.close()


# Rows as earlier versions wrote them, with the keys they did not write yet.
OLD_ROWS = [
    (
        "OrderAccepted",
        '{"event":{"client_order_id":"c","dry_run":false,"intent":{"confidence":null,'
        '"metadata":{"k":[1,"x"]},"order_type":"MARKET","price":null,"product":"MIS",'
        '"qty":1,"reason":"","side":"BUY","strategy_code":"S1","symbol":"NSE:INFY",'
        '"tag":"","trigger_price":null,"validity":"DAY"},"order_id":"O0000000001",'
        '"raw":{},"timestamp":"2026-11-27T04:30:00+00:00"},"order":null}',
        {"internal": False, "placed_by": ""},
    ),
    (
        "DayRolledOver",
        '{"event":{"timestamp":"2026-11-27T02:30:00+00:00","trading_day":"2026-11-27"},'
        '"order":null}',
        {"baseline_unrealized": 0, "unmarked": ()},
    ),
]


@pytest.mark.parametrize(("kind", "body", "defaults"), OLD_ROWS, ids=[r[0] for r in OLD_ROWS])
def test_rows_written_before_a_field_existed_decode_with_its_default(
    kind: str, body: str, defaults: dict[str, object]
) -> None:
    event, order = codec.decode_row(kind, body)
    assert order is None
    for name, value in defaults.items():
        assert getattr(event, name) == value


def test_a_snapshot_written_before_marks_and_baselines_restores() -> None:
    body = json.loads((FIXTURE / "expected_state.json").read_text(encoding="utf-8"))
    for key in ("marks", "fill_marks"):
        body.pop(key, None)
    for key in ("baseline_unrealized", "unmarked"):
        body["risk"].pop(key, None)
    state = state_from_json(json.dumps(body))
    assert state.marks == {}
    assert state.fill_marks == set()
    assert state.risk.baseline_unrealized == 0
    assert state.risk.unmarked == set()
    assert state.ledger.export() == _expected().ledger.export()


def test_a_row_that_does_not_fit_its_declaration_is_a_codec_error() -> None:
    with pytest.raises(codec.CodecError):
        codec.decode_row("OrderCancelled", '{"event":{"order_id":1},"order":null}')
    with pytest.raises(codec.CodecError):
        codec.decode_row("NoSuchEvent", '{"event":{},"order":null}')
