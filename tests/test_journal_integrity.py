"""The audit chain against a deliberate rewrite (issue 8, defect 8).

The attack from the issue: change an old row, recompute every hash after it, delete
the newest 50 events. The plain chain cannot tell (documented in
docs/journal-integrity.md); a keyed chain can, when the intruder lacks the key; head
anchors can, when the anchor file is out of the intruder's reach.

Journals here are written by a real `execgw serve`, and checked by the real CLI.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, market
from execgw.server import codec
from execgw.server.chain import DEFAULT_KEY_ENV, PLAIN_CHAIN, Chain, ChainKeyError, chain_from_env
from execgw.server.config import ConfigError, parse_config
from execgw.server.events import TradingHalted
from execgw.server.journal import (
    Journal,
    JournalChainMismatch,
    JournalCorrupt,
    JournalRecord,
    chain_hash,
)
from execgw.server.recovery import GatewayState, rebuild, state_to_json

if TYPE_CHECKING:
    from tests.durability_helpers import (
        ServerProcess,
        free_port,
        journal_head,
        run_cli,
        run_server_to_exit,
        write_config,
    )
    from tests.e2e_helpers import INFY, publish
else:
    from durability_helpers import (
        ServerProcess,
        free_port,
        journal_head,
        run_cli,
        run_server_to_exit,
        write_config,
    )
    from e2e_helpers import INFY, publish

KEY_ENV = "EXECGW_TEST_JOURNAL_HMAC_KEY"
# Fresh per run and distinctive, so a search for it in every output cannot miss.
KEY = secrets.token_hex(24)
ORDERS = 60  # an accept and a fill each: comfortably more than the 50 events deleted
DROPPED = 50
ANCHOR_WAIT_S = 20.0
T0 = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


@dataclass(frozen=True)
class GatewayRun:
    journal: Path
    anchors: Path
    output: str
    head_while_running: int


def run_gateway(
    directory: Path,
    *,
    keyed: bool,
    orders: int = ORDERS,
    halt: bool = False,
    journal_options: dict[str, Any] | None = None,
) -> GatewayRun:
    """Serve, place `orders` orders (and halt), wait for the running gateway to anchor
    the head, stop it with SIGTERM. Logs at DEBUG and spans to a file, to search for
    the key."""
    directory.mkdir(parents=True, exist_ok=True)
    journal, anchors = directory / "journal.db", directory / "anchors.jsonl"
    port = free_port()
    options: dict[str, Any] = {
        "anchor": {"path": str(anchors), "interval_s": 0.1},
        **(journal_options or {}),
    }
    if keyed:
        options["hmac_key_env"] = KEY_ENV
    config = write_config(directory, journal, port, journal_options=options)
    with config.open("a", encoding="utf-8") as out:
        out.write(f"telemetry: {{exporter: jsonl, path: {directory / 'traces.jsonl'}}}\n")
    with pytest.MonkeyPatch.context() as env:
        if keyed:
            env.setenv(KEY_ENV, KEY)
        server = ServerProcess(config, port, log_level="DEBUG")
    try:
        server.wait_serving()
        with ExecutionClient(server.target, timeout=10.0) as client:
            publish(client, INFY, 1500.0)
            for _ in range(orders):
                client.submit(market(INFY, "BUY", 1, strategy_code="audit", product="NRML"))
            if halt:
                client.halt("integrity test", actor="ops")
            if not (journal_options or {}).get("retain_events"):
                # A replay reads the journal through the server's own read-only open,
                # which must carry the key of a keyed journal and must not need the
                # writer's lock.
                replayed = client.stream_fills(from_sequence=1, reconnect=False)
                assert len(list(itertools.islice(replayed, orders))) == orders
        head = head_of(journal, Chain(KEY.encode()) if keyed else Chain())
        wait_for_anchor(anchors, head)
        assert server.terminate() == 0, server.output
        return GatewayRun(journal, anchors, server.output, head)
    finally:
        server.close()


def head_of(path: Path, chain: Chain) -> int:
    reader = Journal(path, read_only=True, chain=chain)
    try:
        return reader.head()[0]
    finally:
        reader.close()


def read_anchor_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def wait_for_anchor(path: Path, sequence: int) -> None:
    deadline = time.monotonic() + ANCHOR_WAIT_S
    while not any(a["sequence"] == sequence for a in read_anchor_lines(path)):
        assert time.monotonic() < deadline, f"no anchor for sequence {sequence} in {path}"
        time.sleep(0.02)  # bounds the poll rate; the deadline is what ends the wait


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> GatewayRun:
    return run_gateway(tmp_path_factory.mktemp("plain"), keyed=False)


@pytest.fixture(scope="module")
def keyed_run(tmp_path_factory: pytest.TempPathFactory) -> GatewayRun:
    return run_gateway(tmp_path_factory.mktemp("keyed"), keyed=True)


def copy_journal(run: GatewayRun, to: Path) -> Path:
    """Each test tampers with its own copy of the journal the gateway wrote."""
    target = to / "journal.db"
    for suffix in ("", "-wal"):
        source = Path(f"{run.journal}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{target}{suffix}")
            os.chmod(f"{target}{suffix}", 0o600)  # as private as the original
    return target


@dataclass
class Rewrite:
    edited: int
    head: int


def rewrite_without_the_key(
    journal: Path, *, drop_newest: int = 0, rehash: bool = True, downgrade: bool = False
) -> Rewrite:
    """What an intruder with write access but no key can do: change the price of the
    oldest fill, recompute every seal after it with the plain chain (or not), and
    delete the newest events."""
    raw = sqlite3.connect(journal, isolation_level=None)
    try:
        raw.execute("BEGIN")
        rows = raw.execute(
            "SELECT seq, kind, ts, body, prev_hash FROM events ORDER BY seq"
        ).fetchall()
        edited = next(seq for seq, _, _, body, _ in rows if '"1500.75"' in body)
        prev = None
        for seq, kind, ts, body, prev_hash in rows:
            if seq < edited:
                continue
            if seq == edited:
                body = body.replace('"1500.75"', '"1400.75"')
                raw.execute("UPDATE events SET body = ? WHERE seq = ?", (body, seq))
            if rehash:
                prev = prev_hash if prev is None else prev
                digest = chain_hash(seq, kind, ts, body, prev)
                raw.execute(
                    "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
                )
                prev = digest
        head = rows[-1][0] - drop_newest
        raw.execute("DELETE FROM events WHERE seq > ?", (head,))
        if downgrade:
            raw.execute("UPDATE meta SET value = 'sha256' WHERE key = 'chain'")
            raw.execute("DELETE FROM meta WHERE key = 'chain_key_check'")
        raw.execute("COMMIT")
    finally:
        raw.close()
    return Rewrite(edited, head)


def verify(journal: Path, *extra: str) -> tuple[int, str, str]:
    done = run_cli("journal", "verify", "--journal", str(journal), *extra)
    return done.returncode, done.stdout, done.stderr


def failure_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("execgw: journal verify FAILED: "), lines[0]
    return lines[0]


# -- the attack from the issue ---------------------------------------------------


def test_rewrite_and_truncation_pass_the_plain_chain_but_not_the_anchors(
    plain_run: GatewayRun, tmp_path: Path
) -> None:
    journal = copy_journal(plain_run, tmp_path)
    assert verify(journal, "--anchor", str(plain_run.anchors))[0] == 0
    rewrite = rewrite_without_the_key(journal, drop_newest=DROPPED)
    assert rewrite.edited < rewrite.head < plain_run.head_while_running

    # The documented limit: a plain chain is self-consistent after a full recompute.
    code, out, err = verify(journal)
    assert code == 0, err
    assert f"head sequence {rewrite.head}," in out

    code, _, err = verify(journal, "--anchor", str(plain_run.anchors))
    assert code == 1
    line = failure_line(err)
    assert "rewritten" in line or "truncated tail" in line, line


def test_rewrite_and_truncation_fail_the_keyed_chain(
    keyed_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    journal = copy_journal(keyed_run, tmp_path)
    assert verify(journal, "--hmac-key-env", KEY_ENV)[0] == 0
    rewrite = rewrite_without_the_key(journal, drop_newest=DROPPED)
    code, _, err = verify(journal, "--hmac-key-env", KEY_ENV)
    assert code == 1
    assert failure_line(err).endswith(
        f"journal row {rewrite.edited} fails its hash: it was altered"
    )


def test_relabelling_a_keyed_journal_as_plain_fails_verify_with_the_key(
    keyed_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intruder's other move: recompute with sha256 and say the journal is plain."""
    journal = copy_journal(keyed_run, tmp_path)
    rewrite_without_the_key(journal, drop_newest=DROPPED, downgrade=True)
    monkeypatch.setenv(KEY_ENV, KEY)
    code, _, err = verify(journal, "--hmac-key-env", KEY_ENV)
    assert code == 1
    assert "sealed with the plain sha256 chain but an HMAC key was given" in failure_line(err)


# -- anchors: each kind of tampering on its own -----------------------------------


def test_anchor_check_names_a_rewrite(plain_run: GatewayRun, tmp_path: Path) -> None:
    journal = copy_journal(plain_run, tmp_path)
    rewrite = rewrite_without_the_key(journal)
    assert verify(journal)[0] == 0
    code, _, err = verify(journal, "--anchor", str(plain_run.anchors))
    assert code == 1
    line = failure_line(err)
    assert "the journal was rewritten at or before sequence" in line
    anchored = int(line.split("rewritten at or before sequence ")[1])
    assert anchored >= rewrite.edited


def test_anchor_check_names_a_truncated_tail(plain_run: GatewayRun, tmp_path: Path) -> None:
    journal = copy_journal(plain_run, tmp_path)
    with sqlite3.connect(journal) as raw:
        raw.execute("DELETE FROM events WHERE seq > ?", (plain_run.head_while_running - 3,))
    assert verify(journal)[0] == 0
    code, _, err = verify(journal, "--anchor", str(plain_run.anchors))
    assert code == 1
    kept = plain_run.head_while_running - 3
    # The first anchor past the cut names it: the periodic one may have landed on an
    # event of the last few orders rather than on the head.
    first_past = next(
        a["sequence"] for a in read_anchor_lines(plain_run.anchors) if a["sequence"] > kept
    )
    assert failure_line(err).endswith(
        f"events {kept + 1}..{first_past} are missing (truncated tail)"
    ), err


def test_running_gateway_anchors_its_head_periodically_and_at_shutdown(
    plain_run: GatewayRun,
) -> None:
    anchors = read_anchor_lines(plain_run.anchors)
    # At start (the recovered head), while serving, and once more at the clean stop.
    assert len(anchors) >= 3
    sequences = [a["sequence"] for a in anchors]
    assert sequences == sorted(sequences)
    assert anchors[-1]["sequence"] == journal_head(plain_run.journal)
    assert anchors[-1]["sequence"] >= plain_run.head_while_running
    reader = Journal(plain_run.journal, read_only=True)
    try:
        assert reader.head() == (anchors[-1]["sequence"], anchors[-1]["hash"])
    finally:
        reader.close()
    for anchor in anchors:
        assert datetime.fromisoformat(anchor["time"]).tzinfo is not None
    code, out, err = verify(plain_run.journal, "--anchor", str(plain_run.anchors))
    assert code == 0, err
    assert f"{len(anchors)} anchors match" in out


def test_verify_with_a_missing_anchor_file_fails(plain_run: GatewayRun, tmp_path: Path) -> None:
    code, _, err = verify(plain_run.journal, "--anchor", str(tmp_path / "nowhere.jsonl"))
    assert code == 1
    assert "cannot read anchor file" in failure_line(err)


# -- the key -----------------------------------------------------------------------


def test_the_key_appears_in_no_output_journal_file_anchor_or_trace(
    keyed_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = copy_journal(keyed_run, tmp_path)
    wrong = secrets.token_hex(24)
    outputs = [keyed_run.output]
    monkeypatch.setenv(KEY_ENV, wrong)
    outputs.extend(verify(journal, "--hmac-key-env", KEY_ENV)[1:])
    monkeypatch.setenv(KEY_ENV, KEY)
    done = run_cli("journal", "export", "--journal", str(journal), "--hmac-key-env", KEY_ENV)
    assert done.returncode == 0, done.stderr
    outputs.extend([done.stdout, done.stderr])
    for text in outputs:
        assert KEY not in text
        assert wrong not in text
    written = [p for p in keyed_run.journal.parent.iterdir() if p.is_file()]
    assert {"journal.db", "journal.db.lock", "anchors.jsonl", "traces.jsonl"} <= {
        p.name for p in written
    }
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path


def test_a_keyed_journal_is_refused_without_its_key_or_with_another(
    keyed_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = copy_journal(keyed_run, tmp_path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    code, _, err = verify(journal, "--hmac-key-env", KEY_ENV)
    assert code == 1
    assert failure_line(err).endswith(
        f"--hmac-key-env names {KEY_ENV}, but {KEY_ENV} is not set or is empty"
    )
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)
    code, _, err = verify(journal)
    assert code == 1
    assert "sealed with a keyed chain (hmac-sha256) and cannot be opened without its key" in (
        failure_line(err)
    )
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(24))
    code, _, err = verify(journal, "--hmac-key-env", KEY_ENV)
    assert code == 1
    assert "the HMAC key given is not the key" in failure_line(err)


def test_serve_refuses_a_missing_key_and_a_key_for_a_plain_journal(
    plain_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed_config = write_config(
        tmp_path, tmp_path / "new.db", free_port(), journal_options={"hmac_key_env": KEY_ENV}
    )
    monkeypatch.delenv(KEY_ENV, raising=False)
    done = run_server_to_exit(keyed_config)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"execgw: config error: journal.hmac_key_env names {KEY_ENV}, but {KEY_ENV} is not "
        "set or is empty"
    )
    assert not (tmp_path / "new.db").exists()

    monkeypatch.setenv(KEY_ENV, KEY)
    journal = copy_journal(plain_run, tmp_path)
    done = run_server_to_exit(
        write_config(
            tmp_path,
            journal,
            free_port(),
            journal_options={"hmac_key_env": KEY_ENV},
            name="plain-with-key.yaml",
        )
    )
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip()
    assert "sealed with the plain sha256 chain but an HMAC key was given" in line
    assert KEY not in line


# -- in-process pieces ----------------------------------------------------------------


@pytest.fixture
def keyed_journal(tmp_path: Path) -> Path:
    path = tmp_path / "keyed.db"
    journal = Journal(path, chain=Chain(KEY.encode()))
    try:
        journal.append(
            [
                JournalRecord(i, T0 + timedelta(seconds=i), TradingHalted("", "ops", "t", T0), None)
                for i in (1, 2, 3)
            ]
        )
    finally:
        journal.close()
    return path


def test_keyed_rows_are_hmacs_and_only_the_key_reproduces_them(keyed_journal: Path) -> None:
    journal = Journal(keyed_journal, read_only=True, chain=Chain(KEY.encode()))
    try:
        rows = list(journal.rows())
    finally:
        journal.close()
    for row in rows:
        args = (row.sequence, row.kind, row.timestamp, row.body, row.prev_hash)
        assert row.hash == Chain(KEY.encode()).seal(*args)
        assert row.hash != chain_hash(*args)
        assert KEY not in repr(row)
    with pytest.raises(JournalChainMismatch):
        Journal(keyed_journal, read_only=True)
    with pytest.raises(JournalChainMismatch):
        Journal(keyed_journal)


def test_key_from_the_environment_is_checked_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not chain_from_env("").keyed
    monkeypatch.setenv(KEY_ENV, KEY)
    chain = chain_from_env(KEY_ENV)
    assert chain.keyed
    assert KEY not in repr(chain)
    short = "s3cret-but-short"
    monkeypatch.setenv(KEY_ENV, short)
    with pytest.raises(ChainKeyError, match="too short") as info:
        chain_from_env(KEY_ENV)
    assert short not in str(info.value)


def test_config_wants_the_name_of_a_variable_never_a_key() -> None:
    pasted = f"{KEY[:20]}/{KEY[20:]}="  # what a base64 key pasted by mistake looks like
    with pytest.raises(ConfigError) as info:
        parse_config({"journal": {"hmac_key_env": pasted}}, source="test")
    assert "journal.hmac_key_env" in str(info.value)
    assert KEY[:20] not in str(info.value)
    parsed = parse_config(
        {"journal": {"hmac_key_env": KEY_ENV, "anchor": {"path": "anchors.jsonl"}}},
        source="test",
    )
    assert parsed.journal.anchor is not None
    assert parsed.journal.anchor.interval_s == 60.0


# -- snapshots and pruning records are sealed too (review defect 1) ----------------------


@pytest.fixture(scope="module")
def keyed_halted_run(tmp_path_factory: pytest.TempPathFactory) -> GatewayRun:
    """The review's journal: keyed, anchored, 10 orders and a halt, no snapshot yet."""
    return run_gateway(tmp_path_factory.mktemp("halted"), keyed=True, orders=10, halt=True)


@pytest.fixture(scope="module")
def keyed_pruned_run(tmp_path_factory: pytest.TempPathFactory) -> GatewayRun:
    """The same day with a snapshot every 5 events and only 3 events retained."""
    return run_gateway(
        tmp_path_factory.mktemp("pruned"),
        keyed=True,
        orders=10,
        halt=True,
        journal_options={"snapshot_every": 5, "retain_events": 3},
    )


KEYED_CHAIN = Chain(KEY.encode())


def rebuild_keyed(journal: Path) -> GatewayState:
    reader = Journal(journal, read_only=True, chain=KEYED_CHAIN)
    try:
        return rebuild(reader)
    finally:
        reader.close()


def keyed_config(directory: Path, journal: Path, name: str = "keyed.yaml") -> Path:
    return write_config(
        directory, journal, free_port(), journal_options={"hmac_key_env": KEY_ENV}, name=name
    )


def test_a_forged_snapshot_at_the_head_fails_verify_and_stops_the_gateway(
    keyed_halted_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's attack: without the key, a snapshot at the head that clears the
    halt, restarts order ids at 1 and drops every position, its sha256 recomputed."""
    monkeypatch.setenv(KEY_ENV, KEY)
    journal = copy_journal(keyed_halted_run, tmp_path)
    genuine = rebuild_keyed(journal)
    assert genuine.risk.trips
    assert genuine.ids.next_order == 11
    assert genuine.ledger.export()[1]
    forged = codec.json_loads(state_to_json(genuine))
    forged["risk"]["trips"] = []
    forged["ids"]["next_order"] = 1
    forged["positions"] = []
    body = json.dumps(forged)
    head = genuine.sequence
    with sqlite3.connect(journal) as raw:
        raw.execute(
            "INSERT INTO snapshots VALUES (?, ?, ?)",
            (head, body, hashlib.sha256(body.encode()).hexdigest()),
        )

    code, _, err = verify(
        journal, "--hmac-key-env", KEY_ENV, "--anchor", str(keyed_halted_run.anchors)
    )
    assert code == 1
    assert f"snapshot at {head} fails its checksum" in failure_line(err)
    with pytest.raises(JournalCorrupt, match=f"snapshot at {head} fails its checksum"):
        rebuild_keyed(journal)
    done = run_server_to_exit(keyed_config(tmp_path, journal))
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line
    assert line.startswith("execgw: journal error: ")
    assert f"snapshot at {head} fails its checksum" in line


@pytest.mark.parametrize("seal", [None, "plain"])
def test_history_deleted_behind_a_fake_pruning_record_fails_verify(
    keyed_halted_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seal: str | None
) -> None:
    """The review's second attack: delete events 1..15 and record them as pruned
    (as schema 1 did, without a seal, or with a seal made without the key)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    journal = copy_journal(keyed_halted_run, tmp_path)
    with sqlite3.connect(journal) as raw:
        (prev,) = raw.execute("SELECT prev_hash FROM events WHERE seq = 16").fetchone()
        raw.execute("DELETE FROM events WHERE seq < 16")
        raw.execute("INSERT INTO meta VALUES ('pruned_below', '16')")
        raw.execute("INSERT INTO meta VALUES ('pruned_prev_hash', ?)", (prev,))
        if seal is not None:
            raw.execute(
                "INSERT INTO meta VALUES ('pruned_seal', ?)", (PLAIN_CHAIN.seal_pruning(16, prev),)
            )
    code, _, err = verify(
        journal, "--hmac-key-env", KEY_ENV, "--anchor", str(keyed_halted_run.anchors)
    )
    assert code == 1
    assert failure_line(err).endswith(
        "the pruning record (events below 16 removed) fails its seal: it was forged or "
        "altered, so nothing vouches that those events were pruned rather than deleted"
    )


def test_a_pruned_keyed_journal_verifies_against_its_anchors_and_restarts(
    keyed_pruned_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    journal = copy_journal(keyed_pruned_run, tmp_path)
    code, out, err = verify(
        journal, "--hmac-key-env", KEY_ENV, "--anchor", str(keyed_pruned_run.anchors)
    )
    assert code == 0, err
    assert "pruned below " in out
    assert " sealed" in out
    # The anchor written at start (sequence 0) vouches for events pruned since.
    assert "older than the retained events" in out

    # The sealed snapshot is what a restart loads: ids continue after the 10 orders.
    port = free_port()
    config = write_config(
        tmp_path, journal, port, journal_options={"hmac_key_env": KEY_ENV}, name="restart.yaml"
    )
    server = ServerProcess(config, port)
    try:
        server.wait_serving()
        with ExecutionClient(server.target, timeout=10.0) as client:
            result = client.submit(market(INFY, "BUY", 1, strategy_code="audit", product="NRML"))
        assert result.order_id == "O0000000011"
    finally:
        server.close()


def test_a_rewritten_snapshot_in_a_pruned_keyed_journal_stops_the_gateway(
    keyed_pruned_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Here the snapshot is the only record of the pruned events, so nothing else could
    catch a change to it."""
    monkeypatch.setenv(KEY_ENV, KEY)
    journal = copy_journal(keyed_pruned_run, tmp_path)
    with sqlite3.connect(journal) as raw:
        (seq, body) = raw.execute("SELECT seq, body FROM snapshots").fetchone()
        (row_hash,) = raw.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
        data = json.loads(body)
        data["positions"] = []
        forged = json.dumps(data)
        raw.execute(
            "UPDATE snapshots SET body = ?, seal = ?",
            (forged, PLAIN_CHAIN.seal_snapshot(seq, row_hash, forged)),
        )
    code, _, err = verify(journal, "--hmac-key-env", KEY_ENV)
    assert code == 1
    assert f"snapshot at {seq} fails its checksum" in failure_line(err)
    done = run_server_to_exit(keyed_config(tmp_path, journal))
    assert done.returncode == 3, done.stderr
    assert f"snapshot at {seq} fails its checksum" in done.stderr


# -- a key variable that is named is required (review defect 3) ------------------------


def test_verify_and_export_require_the_key_a_config_or_the_flag_names(
    plain_run: GatewayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a silent fall back to the plain chain: a relabelled plain copy of a keyed
    journal would pass it."""
    journal = copy_journal(plain_run, tmp_path)
    config = write_config(tmp_path, journal, free_port(), journal_options={"hmac_key_env": KEY_ENV})
    monkeypatch.delenv(KEY_ENV, raising=False)
    for command in ("verify", "export"):
        for source, args in (
            ("journal.hmac_key_env", ("--config", str(config))),
            ("--hmac-key-env", ("--journal", str(journal), "--hmac-key-env", KEY_ENV)),
        ):
            done = run_cli("journal", command, *args)
            assert done.returncode == 1, (command, source, done.stdout)
            assert done.stdout == ""
            verb = "verify FAILED" if command == "verify" else "export failed"
            assert done.stderr == (
                f"execgw: journal {verb}: {source} names {KEY_ENV}, but {KEY_ENV} is not set "
                "or is empty\n"
            )
    # With the key set, the journal must be keyed.
    monkeypatch.setenv(KEY_ENV, KEY)
    done = run_cli("journal", "verify", "--config", str(config))
    assert done.returncode == 1
    assert "sealed with the plain sha256 chain but an HMAC key was given" in failure_line(
        done.stderr
    )


# -- a key pasted where its name belongs is never printed (review defect 4) -------------


def pasted_keys() -> list[str]:
    """Keys that start with a letter, as a quarter of hex keys do: the old name rule
    took the lower-case one as a name and echoed it."""
    return ["d" + secrets.token_hex(31), ("D" + secrets.token_hex(31)).upper()]


def test_a_key_pasted_as_the_variable_name_is_refused_without_echoing_it(
    plain_run: GatewayRun, tmp_path: Path
) -> None:
    for pasted in pasted_keys():
        with pytest.raises(ConfigError) as info:
            parse_config({"journal": {"hmac_key_env": pasted}}, source="test")
        assert "journal.hmac_key_env: " in str(info.value)
        assert pasted not in str(info.value)

        config = write_config(
            tmp_path,
            tmp_path / "new.db",
            free_port(),
            journal_options={"hmac_key_env": pasted},
            name="pasted.yaml",
        )
        done = run_server_to_exit(config)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert pasted not in done.stderr + done.stdout
        assert pasted.lower() not in (done.stderr + done.stdout).lower()

        code, out, err = verify(plain_run.journal, "--hmac-key-env", pasted)
        assert code == 1
        assert "--hmac-key-env must be the NAME of an environment variable" in failure_line(err)
        assert pasted not in out + err
    # Names that pass are the kind the messages may print.
    assert parse_config({"journal": {"hmac_key_env": KEY_ENV}}, source="t").journal.hmac_key_env
    for name in ("execgw_key", "1KEY", "A" * 32):
        with pytest.raises(ConfigError):
            parse_config({"journal": {"hmac_key_env": name}}, source="test")
