"""The jsonl exporter's writer process (telemetry/span_writer.py): its frames, its
answers, a disk that fails under it, and a gateway killed under it (kill -9: the
writer writes what it had and exits, never left behind)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, market
from execgw.server.telemetry.span_writer import frame, serve

if TYPE_CHECKING:
    from tests.e2e_helpers import INFY, publish
    from tests.test_cli_serve import Served, execgw_command, free_port, wait_serving
else:
    from e2e_helpers import INFY, publish
    from test_cli_serve import Served, execgw_command, free_port, wait_serving
SPAN = ("execgw.stage.venue", b"\x01" * 16, 2, 0, 1, 1_000_000_000, 2_000_000_000, {"k": "v"})


def _run(path: Path, *frames: bytes) -> list[bytes]:
    """serve() over a pipe, in a thread: what it answered."""
    read_frames, write_frames = os.pipe()
    read_answers, write_answers = os.pipe()
    with open(read_frames, "rb") as frames_in, open(write_answers, "wb") as answers_out:
        worker = threading.Thread(target=serve, args=(path, frames_in, answers_out))
        worker.start()
        with open(write_frames, "wb") as frames_out:
            for each in frames:
                frames_out.write(each)
        worker.join(30)
        assert not worker.is_alive()
    with open(read_answers, "rb") as answers_in:
        return answers_in.read().splitlines()


def test_frames_become_lines_in_order_and_a_flush_is_answered_after_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.jsonl"
    ending = ',"resource":{"attributes":{},"schema_url":""}}\n'
    answers = _run(
        path,
        frame(["r", 0, ending]),
        frame(["s", [(*SPAN, [], [], 0), '{"name":"given"}\n']]),
        frame(["f", b"7"]),
        frame(["s", [(*SPAN, [("e", 1_500_000_000, {})], [(b"\x02" * 16, 3, {})], 0)]]),
    )
    assert answers == [b"7"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["execgw.stage.venue", "given", "execgw.stage.venue"]
    first = lines[0]
    assert first["context"]["trace_id"] == "0x" + "01" * 16
    assert first["parent_id"] == f"0x{1:016x}"
    assert first["start_time"] == "1970-01-01T00:00:01.000000Z"
    assert first["resource"] == {"attributes": {}, "schema_url": ""}
    assert lines[2]["events"][0]["timestamp"] == "1970-01-01T00:00:01.500000Z"
    assert lines[2]["links"][0]["context"]["span_id"] == f"0x{3:016x}"


def test_a_disk_that_fails_loses_the_spans_and_says_so_once_never_stopping_the_writer() -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    ending = "}\n"
    answers = _run(
        full,
        frame(["r", 0, ending]),
        frame(["s", [(*SPAN, [], [], 0)]]),
        frame(["s", [(*SPAN, [], [], 0)]]),
        frame(["f", b"1"]),
    )
    problems = [a for a in answers if a.startswith(b"!")]
    assert len(problems) == 1  # one report a minute at most
    assert b"cannot write /dev/full" in problems[0]
    assert answers[-1] == b"1"  # and it still answered the flush


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(child) for child in children)
    return found


def test_a_gateway_killed_leaves_no_writer_behind_and_the_spans_it_sent_written(
    tmp_path: Path,
) -> None:
    spans = tmp_path / "traces.jsonl"
    config = tmp_path / "execgw.yaml"
    config.write_text(
        "mode: paper\n"
        f"journal:\n  path: {tmp_path / 'journal.db'}\n"
        "market_data:\n  source: external\n"
        "trading_day:\n  mis_square_off: null\n"
        f"telemetry:\n  exporter: jsonl\n  path: {spans}\n  session_id: kill-1\n",
        encoding="utf-8",
    )
    port = free_port()
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*execgw_command(), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,
        )
    served = Served(proc, port, out, err)
    try:
        wait_serving(served)
        [writer] = _children(proc.pid)
        assert b"span_writer_main" in Path(f"/proc/{writer}/cmdline").read_bytes()
        exited = os.pidfd_open(writer)
        with ExecutionClient(served.target, timeout=10.0) as client:
            publish(client, INFY, 1500.0)
            placed = client.submit(market(INFY, "BUY", 1, strategy_code="K", product="NRML"))
        # The gateway exports a second after spans end: the order's may or may not have
        # reached the writer by the kill; what did is written whole.
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # The writer sees its pipe close and exits: wait for that, not for a time.
        assert select.select([exited], [], [], 30)[0], "the span writer outlived its gateway"
        os.close(exited)
    finally:
        served.stop()
    written = (
        [json.loads(line) for line in spans.read_text().splitlines()] if spans.exists() else []
    )
    # Whatever reached the file is whole lines (json.loads above) of this session.
    assert all(each["attributes"]["execgw.session_id"] == "kill-1" for each in written)
    assert placed.order_id
