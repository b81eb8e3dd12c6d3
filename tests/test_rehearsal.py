"""`make rehearsal` (tools/rehearsal.py), small: a live + dry_run gateway as a real
process, a scripted session through the client, its spans in a jsonl file, and the
`execgw trace summary` of the session printed at the end.

The tool waits on the gateway's "listening" line, the client's wait_ready and the
answers themselves; the timeout here only guards against a hang."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "rehearsal.py"
SESSION = "reh-test"
ORDERS = 20
TIMEOUT_S = 60.0
STAGES = ("validate", "risk", "venue", "journal", "publish")


def _count(out: str, *cells: str) -> int:
    """The count of the summary's table row that starts with `cells`; 0 if there is none."""
    pattern = r"^" + r"\s+".join(re.escape(cell) for cell in cells) + r"\s+(\d+)\b"
    row = re.search(pattern, out, re.MULTILINE)
    return 0 if row is None else int(row[1])


def test_a_rehearsal_prints_the_summary_of_its_dry_run_session(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(sys.executable, str(TOOL), "--orders", str(ORDERS), "--dir", str(tmp_path)),
            *("--session", SESSION, "--seed", "7"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=tmp_path,
    )
    out = run.stdout
    assert run.returncode == 0, f"{out}\n--- stderr ---\n{run.stderr}"
    assert "dry_run=true" in out.splitlines()[0]
    assert "INVALID_ARGUMENT" in out

    traces = tmp_path / "traces.jsonl"
    summary = out[out.index("$ execgw trace summary") :]
    assert re.search(rf"traces\.jsonl: \d+ spans \(session {SESSION}\)", summary), summary
    # Orders by status, the rejected ones by reason: one of each kind RSK provokes.
    for status in ("FILLED", "CANCELLED"):
        assert _count(summary, status) > 0, (status, summary)
    for reason in ("MAX_ORDER_QTY", "PRICE_COLLAR", "SYMBOL_NOT_ALLOWED"):
        assert _count(summary, "REJECTED", reason) > 0, (reason, summary)
    # A row per stage of the order path.
    for stage in STAGES:
        assert _count(summary, f"execgw.stage.{stage}") > 0, (stage, summary)
    assert _count(summary, "execgw.fill") > 0, summary  # resting orders filled later

    # Every span of the file is of the run's session (or its per-call one) and a dry run.
    spans = [json.loads(line) for line in traces.read_text(encoding="utf-8").splitlines()]
    assert spans
    sessions = {span["attributes"].get("execgw.session_id") for span in spans}
    assert sessions == {SESSION, f"{SESSION}.alt"}
    assert all(span["attributes"].get("execgw.dry_run") is True for span in spans)
    assert all(span["attributes"].get("execgw.mode") == "live" for span in spans)
