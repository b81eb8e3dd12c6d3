"""Python stubs generated at test time, from proto/ or from a released contract's buf image,
and Python processes that use them instead of the stubs installed with execgw-client.

Two generations of the same .proto files cannot share a process (protobuf's default
descriptor pool refuses a second, different `execgw/v1/orders.proto`), so code that uses
generated stubs runs in its own interpreter with them first on its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
RELEASED_IMAGE = PROTO_ROOT / "releases" / "v1.binpb"
PROTO_FILES = ("execgw/v1/orders.proto", "execgw/v1/market_data.proto", "execgw/v1/gateway.proto")

# Makes `import execgw.client` fail in the child, so nothing can lean on the helper library.
BLOCK_HELPER_LIBRARY = "import sys\nsys.modules['execgw.client'] = None\n"


def generate_stubs(out: Path, *, image: Path | None = None) -> Path:
    """Generate `execgw.v1` (messages and gRPC stubs) into `out` with protoc.

    From the .proto files under proto/, or from a buf image (a FileDescriptorSet that
    holds the imports too) when `image` is given. Returns `out`.
    """
    args = ["protoc", f"--python_out={out}", f"--grpc_python_out={out}"]
    if image is None:
        grpc_include = Path(protoc.__file__).parent / "_proto"
        args += [f"-I{PROTO_ROOT}", f"-I{grpc_include}"]
    else:
        args += [f"--descriptor_set_in={image}"]
    out.mkdir(parents=True, exist_ok=True)
    if protoc.main([*args, *PROTO_FILES]) != 0:
        raise RuntimeError(f"protoc failed: {args}")
    # A regular package, so it wins over the installed execgw.v1 (also a regular package)
    # by coming first on the path; `execgw` itself stays a namespace package.
    (out / "execgw" / "v1" / "__init__.py").touch()
    return out


def _env(stubs: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(stubs), *filter(None, [env.get("PYTHONPATH")])])
    return env


def python_with_stubs(
    stubs: Path, code: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports execgw.v1 from `stubs`."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(stubs),
    )
