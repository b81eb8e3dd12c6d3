"""The systemd unit in deploy/ is one systemd accepts (checked where systemd-analyze is)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "deploy" / "execgw.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_service_unit_verifies(tmp_path: Path) -> None:
    # The unit names the install location; point it at this checkout's execgw instead.
    execgw = Path(sys.executable).parent / "execgw"
    text = UNIT.read_text(encoding="utf-8").replace("/opt/execgw/.venv/bin/execgw", str(execgw))
    unit = tmp_path / "execgw.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "execgw.service" not in done.stderr, done.stderr


def test_the_unit_does_not_retry_what_a_restart_cannot_fix() -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert "RestartPreventExitStatus=2 3 5 6" in text
    assert "UMask=0077" in text
