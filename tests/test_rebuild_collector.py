"""A rebuild at a start holds the cyclic garbage collector off while it decodes the day
(it makes millions of objects, none of them garbage), and always gives it back as it
found it; one while the gateway serves leaves the collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from execgw.server import recovery
from execgw.server.journal import Journal, JournalCorrupt


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal.db")
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_waits_during_a_rebuild_and_runs_after(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = recovery._rebuild

    def watched(journal: Journal) -> recovery.GatewayState:
        seen.append(gc.isenabled())
        return real(journal)

    monkeypatch.setattr(recovery, "_rebuild", watched)
    gc.enable()
    state = recovery.rebuild(journal, starting=True)
    assert state.sequence == 0
    assert seen == [False]
    assert gc.isenabled()
    recovery.rebuild(journal)  # while serving: the event loop keeps its collector
    assert seen == [False, True]


def test_a_failed_rebuild_gives_the_collector_back(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(journal: Journal) -> recovery.GatewayState:
        raise JournalCorrupt("snapshot at 7 cannot be decoded")

    monkeypatch.setattr(recovery, "_rebuild", corrupt)
    gc.enable()
    with pytest.raises(JournalCorrupt):
        recovery.rebuild(journal, starting=True)
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off(journal: Journal) -> None:
    gc.disable()
    recovery.rebuild(journal, starting=True)
    assert not gc.isenabled()
