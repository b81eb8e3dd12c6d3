"""`buf breaking` against the released contract (proto/releases/v1.1.binpb, the check that
`make lint` runs) catches the edits that would break a client, and lets additions through.

Each edit is made to a copy of proto/; the rule that must catch it is named, so a change
to buf.yaml's `breaking` rules that lets one of them through fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"
RELEASED = ROOT / "proto" / "releases" / "v1.1.binpb"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not on PATH (buf comes from npm; CI has it)"
)


def _breaking(proto_dir: Path) -> set[str]:
    """The rules `buf breaking` reports for proto_dir against the released image."""
    if not BUF.exists():
        pytest.fail("node_modules has no buf: run `make node_modules/.installed`")
    run = subprocess.run(
        [str(BUF), "breaking", str(proto_dir), "--against", str(RELEASED), "--error-format=json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode in (0, 100), run.stderr  # 100: breaking changes found
    rules = {json.loads(line)["type"] for line in run.stdout.splitlines() if line.strip()}
    assert "COMPILE" not in rules, run.stdout  # an edit that does not compile proves nothing
    assert bool(rules) == (run.returncode == 100), (run.returncode, run.stdout, run.stderr)
    return rules


def _edited(tmp_path: Path, file: str, old: str, new: str) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", copy, ignore=shutil.ignore_patterns("releases"))
    path = copy / "execgw" / "v1" / file
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {file}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return copy


def test_the_current_contract_does_not_break_the_released_one() -> None:
    assert _breaking(ROOT / "proto") == set()


@pytest.mark.parametrize(
    ("file", "old", "new", "rule"),
    [
        # A rename keeps the wire format but breaks JSON and every generated accessor.
        ("orders.proto", "  double price = 9;", "  double fill_price = 9;", "FIELD_SAME_NAME"),
        # A new number: old peers read the quantity as an unknown field, i.e. as 0.
        (
            "orders.proto",
            "  int64 qty = 8;",
            "  int64 qty = 30;",
            "FIELD_NO_DELETE",
        ),
        ("orders.proto", "  int64 qty = 4;", "  int32 qty = 4;", "FIELD_SAME_TYPE"),
        ("orders.proto", "  ORDER_STATUS_PARTIAL = 4;\n", "", "ENUM_VALUE_NO_DELETE"),
        (
            "gateway.proto",
            "  rpc PreviewOrder(PreviewOrderRequest) returns (PreviewOrderResponse);\n",
            "",
            "RPC_NO_DELETE",
        ),
        # Presence changes what "unset" means to generated code (0.0 or absent).
        (
            "orders.proto",
            "  double price = 9;",
            "  optional double price = 9;",
            "FIELD_SAME_CARDINALITY",
        ),
    ],
    ids=[
        "rename-field",
        "renumber-field",
        "change-type",
        "delete-enum-value",
        "delete-rpc",
        "add-presence",
    ],
)
def test_a_breaking_edit_is_caught(
    tmp_path: Path, file: str, old: str, new: str, rule: str
) -> None:
    assert rule in _breaking(_edited(tmp_path, file, old, new))


def test_an_added_field_is_not_breaking(tmp_path: Path) -> None:
    added = "  double price = 9;\n  // A note.\n  string note = 90;"
    assert _breaking(_edited(tmp_path, "orders.proto", "  double price = 9;", added)) == set()
