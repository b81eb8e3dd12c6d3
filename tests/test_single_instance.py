"""One gateway per journal and per port, and private journal files (issue 8, defect 5).

Each refusal is checked on a real second `execgw serve`: it must exit with its
documented code and exactly one line on stderr, while the first gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.server.app import Gateway
from execgw.server.config import GatewayConfig, parse_config
from execgw.server.events import TradingHalted
from execgw.server.journal import Journal, JournalInUse, JournalRecord
from execgw.server.journal_lock import lock_path
from execgw.server.listen import ListenFailed

if TYPE_CHECKING:
    from tests.durability_helpers import (
        SERVING,
        ServerProcess,
        execgw_command,
        free_port,
        health_check,
        journal_head,
        run_cli,
        write_config,
    )
else:
    from durability_helpers import (
        SERVING,
        ServerProcess,
        execgw_command,
        free_port,
        health_check,
        journal_head,
        run_cli,
        write_config,
    )

EXIT_JOURNAL_IN_USE = 5
EXIT_LISTEN = 6
# Long enough for a slow start on a busy machine; on a build without the checks the
# second gateway runs until this expires, which fails the test.
REFUSAL_TIMEOUT_S = 20.0
T0 = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


def serve_expecting_refusal(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*execgw_command(), "serve", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
        check=False,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def first(tmp_path: Path) -> Iterator[ServerProcess]:
    """A serving gateway on tmp_path/journal.db."""
    port = free_port()
    server = ServerProcess(write_config(tmp_path, tmp_path / "journal.db", port), port)
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()


def test_second_serve_on_the_same_journal_exits_naming_the_holder(
    tmp_path: Path, first: ServerProcess
) -> None:
    journal = tmp_path / "journal.db"
    holder = json.loads(lock_path(journal).read_text(encoding="utf-8"))
    assert holder["pid"] == first.pid
    assert holder["listen"] == first.target
    assert holder["host"] == socket.gethostname()
    assert datetime.fromisoformat(holder["since"]).tzinfo is not None

    # The same config: same journal and same port; the journal is what gets named.
    same = tmp_path / "execgw.yaml"
    other_port = write_config(tmp_path, journal, free_port(), name="other-port.yaml")
    for config in (same, other_port):
        done = serve_expecting_refusal(config)
        assert done.returncode == EXIT_JOURNAL_IN_USE, done.stderr
        line = one_line(done.stderr)
        assert line == (
            f"execgw: journal {journal} is in use by execgw pid {first.pid} on host "
            f"{socket.gethostname()} (listening on {first.target}, since {holder['since']})"
        )
        assert health_check(first.target) == SERVING

    # Readers take no lock: the audit tools work beside the running writer.
    verified = run_cli("journal", "verify", "--journal", str(journal))
    assert verified.returncode == 0, verified.stderr
    assert journal_head(journal) >= 0

    # The kernel drops the lock with the process: a kill -9 leaves nothing stale.
    first.kill()
    port = free_port()
    successor = ServerProcess(write_config(tmp_path, journal, port, name="successor.yaml"), port)
    try:
        successor.wait_serving()
    finally:
        successor.close()


def test_second_serve_on_a_port_another_execgw_serves_is_refused(
    tmp_path: Path, first: ServerProcess
) -> None:
    port = int(first.target.rpartition(":")[2])
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other, other / "journal.db", port)
    done = serve_expecting_refusal(config)
    assert done.returncode == EXIT_LISTEN, done.stderr
    assert one_line(done.stderr) == (
        f"execgw: cannot listen on {first.target}: the address is already in use "
        "(is another execgw serving it?)"
    )
    assert health_check(first.target) == SERVING


def test_port_held_by_another_program_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = serve_expecting_refusal(write_config(tmp_path, tmp_path / "journal.db", port))
    assert done.returncode == EXIT_LISTEN, done.stderr
    assert "already in use" in one_line(done.stderr)


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("nowhere.invalid:50051", "does not resolve"),
        # TEST-NET-1 (RFC 5737): never an address of this host.
        ("192.0.2.1:50051", "192.0.2.1 is not an address of this host"),
    ],
)
def test_invalid_listen_address_is_refused_in_one_line(
    tmp_path: Path, listen: str, reason: str
) -> None:
    # Not loopback: without TLS and auth only server.insecure gets it past the
    # exposure rule (test_tls.py) to the listen check.
    config = write_config(
        tmp_path, tmp_path / "journal.db", free_port(), server_options={"insecure": True}
    )
    done = serve_expecting_refusal(config, "--listen", listen)
    assert done.returncode == EXIT_LISTEN, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(f"execgw: cannot listen on {listen}: "), line
    assert reason in line


def test_a_second_writer_in_the_same_process_is_refused_and_readers_are_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    writer = Journal(path)
    try:
        with pytest.raises(JournalInUse, match=f"pid {os.getpid()} on host"):
            Journal(path)
        reader = Journal(path, read_only=True)
        reader.close()
    finally:
        writer.close()
    Journal(path).close()  # released by close()


def test_journal_lock_and_anchor_files_are_created_0600(tmp_path: Path) -> None:
    """With a permissive umask, as a service manager may leave it."""
    journal = tmp_path / "var" / "journal.db"
    anchors = tmp_path / "anchors" / "head.jsonl"
    port = free_port()
    config = write_config(
        tmp_path,
        journal,
        port,
        journal_options={"anchor": {"path": str(anchors), "interval_s": 60}},
    )
    old_umask = os.umask(0o022)
    try:
        server = ServerProcess(config, port)
    finally:
        os.umask(old_umask)
    try:
        server.wait_serving()
        files = [journal, Path(f"{journal}-wal"), Path(f"{journal}-shm"), lock_path(journal)]
        for path in (*files, anchors):
            assert path.exists(), path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    finally:
        server.close()


def test_head_is_read_as_one_pair(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        assert journal.head() == (0, "0" * 64)
        journal.append([JournalRecord(1, T0, TradingHalted("", "ops", "test", T0), None)])
        [row] = list(journal.rows())
        assert journal.head() == (1, row.hash)
    finally:
        journal.close()


# -- the lock follows the file, not its name (review defect 2) ---------------------------


def test_a_symlink_or_hard_link_to_a_served_journal_is_refused(
    tmp_path: Path, first: ServerProcess
) -> None:
    journal = tmp_path / "journal.db"
    holder = json.loads(lock_path(journal).read_text(encoding="utf-8"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    symlink = elsewhere / "via-symlink.db"
    symlink.symlink_to(journal)
    hard_link = elsewhere / "via-hard-link.db"
    os.link(journal, hard_link)

    done = serve_expecting_refusal(write_config(elsewhere, symlink, free_port(), name="sym.yaml"))
    assert done.returncode == EXIT_JOURNAL_IN_USE, done.stderr
    assert one_line(done.stderr) == (
        f"execgw: journal {symlink} is in use by execgw pid {first.pid} on host "
        f"{socket.gethostname()} (listening on {first.target}, since {holder['since']})"
    )

    done = serve_expecting_refusal(write_config(elsewhere, hard_link, free_port(), name="hl.yaml"))
    assert done.returncode == EXIT_JOURNAL_IN_USE, done.stderr
    assert one_line(done.stderr) == (
        f"execgw: journal {hard_link} is in use by process {first.pid} on this host, which "
        "opened the same file under another path (a hard link?)"
    )
    assert health_check(first.target) == SERVING


def _posix_locks_of_this_process(path: Path) -> list[str]:
    """SQLite's own (POSIX) locks on the file, as the kernel lists them."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    # Each line opens with its ordinal in the kernel's whole table, which moves as other
    # processes (parallel test workers) take and drop locks: compare what follows it.
    with open("/proc/locks", encoding="ascii") as locks:
        return [
            line.split(":", 1)[1].strip()
            for line in locks
            if " POSIX " in line and f" {os.getpid()} " in line and f" {inode} " in line
        ]


def test_links_in_the_same_process_are_refused_without_dropping_sqlites_locks(
    tmp_path: Path,
) -> None:
    """A refused attempt must not close a descriptor of the file: that would drop the
    POSIX locks the writer's SQLite connection holds (a WAL connection keeps a shared
    lock on the database file while it is open)."""
    path = tmp_path / "journal.db"
    symlink = tmp_path / "link.db"
    hard_link = tmp_path / "hard.db"
    writer = Journal(path)
    try:
        writer.append([JournalRecord(1, T0, TradingHalted("", "ops", "test", T0), None)])
        symlink.symlink_to(path)
        os.link(path, hard_link)
        held = _posix_locks_of_this_process(path)
        assert held, "a WAL connection holds a lock on the database file"
        for other in (symlink, hard_link):
            with pytest.raises(JournalInUse, match=f"pid {os.getpid()} on host"):
                Journal(other)
            assert _posix_locks_of_this_process(path) == held
        # (Not a reader through the hard link: SQLite finds the WAL by the name it is
        # given, so that reader would look for hard.db-wal.)
        reader = Journal(symlink, read_only=True)
        assert reader.head_sequence == 1
        reader.close()
        assert _posix_locks_of_this_process(path) == held
        writer.append([JournalRecord(2, T0, TradingHalted("", "ops", "test", T0), None)])
    finally:
        writer.close()
    successor = Journal(hard_link)  # released by close(), whatever the name
    successor.close()


# -- new directories are private (review defect 5) ---------------------------------------


def test_directories_the_gateway_creates_are_0700_and_existing_ones_keep_their_mode(
    tmp_path: Path,
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    journal = existing / "var" / "journal" / "journal.db"
    anchors = tmp_path / "audit" / "head" / "anchors.jsonl"
    port = free_port()
    config = write_config(
        tmp_path,
        journal,
        port,
        journal_options={"anchor": {"path": str(anchors), "interval_s": 60}},
    )
    old_umask = os.umask(0o022)
    try:
        server = ServerProcess(config, port)
    finally:
        os.umask(old_umask)
    try:
        server.wait_serving()
        for directory in (
            journal.parent,
            journal.parent.parent,
            anchors.parent,
            anchors.parent.parent,
        ):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    finally:
        server.close()


# -- a start that fails gives back what it took (review defect 6) -----------------------


def _gateway_config(tmp_path: Path, port: int = 0, **journal: object) -> GatewayConfig:
    return parse_config(
        {
            "listen": f"127.0.0.1:{port}",
            "journal": {"path": str(tmp_path / "journal.db"), **journal},
            "market_data": {"source": "external"},
            "server": {"shutdown_grace_s": 1.0},
        },
        source="test",
    )


async def _serve_once(config: GatewayConfig) -> None:
    gateway = Gateway(config)
    port = await gateway.start()
    try:
        # From a thread: this loop is the server's.
        assert await asyncio.to_thread(health_check, f"127.0.0.1:{port}") == SERVING
    finally:
        await gateway.stop(grace=1.0)


async def test_a_start_that_fails_on_its_anchor_file_releases_the_journal(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    broken = _gateway_config(tmp_path, anchor={"path": str(blocker / "head.jsonl")})
    gateway = Gateway(broken)
    with pytest.raises(FileExistsError):
        await gateway.start()
    # The same process can open the journal, and start a gateway on it, again.
    Journal(tmp_path / "journal.db").close()
    await _serve_once(_gateway_config(tmp_path, anchor={"path": str(tmp_path / "head.jsonl")}))


async def test_a_start_that_cannot_bind_releases_the_journal(tmp_path: Path) -> None:
    port = free_port()
    gateway = Gateway(_gateway_config(tmp_path, port))  # the port is free when checked
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taker:
        taker.bind(("127.0.0.1", port))
        taker.listen()
        with pytest.raises(ListenFailed, match="already in use"):
            await gateway.start()
    Journal(tmp_path / "journal.db").close()
    await _serve_once(_gateway_config(tmp_path, port))
