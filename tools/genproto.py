"""Regenerate the Python stubs (with .pyi) from proto/ into OUT_DIR.

Used by `make proto` (OUT_DIR=client/src) and by the test that checks the
committed stubs are current (OUT_DIR=a temporary directory).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def _plugin(name: str, directory: Path) -> str:
    found = shutil.which(name, path=str(directory))
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable}; run `make setup`")
    return found


def generate(out_dir: Path) -> None:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "execgw/v1").glob("*.proto")
    )
    plugin_dir = Path(sys.executable).parent
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy', plugin_dir)}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc', plugin_dir)}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
