"""The committed stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "client" / "src" / "execgw" / "v1"


def test_regenerating_stubs_changes_nothing(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = tmp_path / "execgw" / "v1"
    names = sorted(p.name for p in generated.iterdir())
    assert names, "protoc produced nothing"
    assert any(n.endswith("_pb2.pyi") for n in names)
    assert any(n.endswith("_pb2_grpc.pyi") for n in names)
    stale = [n for n in names if not filecmp.cmp(generated / n, COMMITTED / n, shallow=False)]
    assert stale == [], f"stubs out of date, run `make proto`: {stale}"
    committed = {p.name for p in COMMITTED.iterdir() if p.suffix in (".py", ".pyi")}
    orphans = committed - set(names) - {"__init__.py"}
    assert orphans == set(), f"stubs without a .proto: {sorted(orphans)}"
