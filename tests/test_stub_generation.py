"""proto/buf.gen.yaml generates stubs for other languages from local plugins.

The TypeScript plugin comes with `npm ci`; Go and Java run where their plugins are
installed (Debian: protoc-gen-go, protoc-gen-go-grpc, protobuf-compiler,
protobuf-compiler-grpc-java-plugin) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "node_modules" / ".bin"


def _available(plugin: dict[str, Any], path: str) -> bool:
    if "protoc_builtin" in plugin:
        return shutil.which("protoc", path=path) is not None
    return shutil.which(str(plugin["local"]), path=path) is not None


def test_buf_generate_with_the_plugins_installed(tmp_path: Path) -> None:
    if shutil.which("buf", path=str(BIN)) is None:
        pytest.skip("buf is not installed (npm ci)")
    path = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
    template = yaml.safe_load((ROOT / "proto" / "buf.gen.yaml").read_text(encoding="utf-8"))
    template["plugins"] = [p for p in template["plugins"] if _available(p, path)]
    (tmp_path / "buf.gen.yaml").write_text(yaml.safe_dump(template), encoding="utf-8")
    subprocess.run(
        ["buf", "generate", str(ROOT / "proto"), "--template", "buf.gen.yaml"],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        check=True,
        capture_output=True,
        timeout=120,
    )
    gen = tmp_path / "gen"
    plugins = {str(p.get("local") or p.get("protoc_builtin")) for p in template["plugins"]}
    assert "protoc-gen-es" in plugins
    ts = (gen / "ts" / "execgw" / "v1" / "orders_pb.ts").read_text(encoding="utf-8")
    assert "priceDecimal" in ts
    if "protoc-gen-go" in plugins:
        go = (gen / "go" / "execgw" / "v1" / "orders.pb.go").read_text(encoding="utf-8")
        assert "package execgwv1" in go
        assert "PriceDecimal *string" in go
    if "protoc-gen-go-grpc" in plugins:
        assert (gen / "go" / "execgw" / "v1" / "gateway_grpc.pb.go").is_file()
    if "java" in plugins:
        java = (gen / "java" / "com" / "execgw" / "v1" / "OrderIntent.java").read_text(
            encoding="utf-8"
        )
        assert "package com.execgw.v1;" in java
    if "grpc_java_plugin" in plugins:
        assert (gen / "java" / "com" / "execgw" / "v1" / "ExecutionGatewayGrpc.java").is_file()
