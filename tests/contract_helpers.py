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

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
RELEASED_IMAGE = PROTO_ROOT / "releases" / "v1.0.binpb"
PROTO_FILES = ("execgw/v1/orders.proto", "execgw/v1/market_data.proto", "execgw/v1/gateway.proto")

# What the made-up newer contract (future_image) adds: a status, fields and a stream payload.
FUTURE_STATUS = 99
FUTURE_FIELD = 900

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
    stubs: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` in a fresh interpreter that imports execgw.v1 from `stubs`."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(stubs),
    )


def future_image(out: Path) -> Path:
    """A buf-image-like FileDescriptorSet of a made-up newer contract, written to `out`.

    proto/ as it is now, plus what a later release could add: ORDER_STATUS_FUTURE (99),
    `future_note` on ExecutionResult, `future_fee_decimal` on Fill and Position,
    `future_hint` on OrderIntent (all number 900), and a FutureNotice member (900) of
    ExecutionEvent's payload oneof. Built on descriptors, not .proto text, so it does
    not depend on how the files are written.
    """
    current = out.with_suffix(".current.binpb")
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_include}",
        "--include_imports",
        f"--descriptor_set_out={current}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {args}")
    files = descriptor_pb2.FileDescriptorSet.FromString(current.read_bytes())
    orders = next(f for f in files.file if f.name == "execgw/v1/orders.proto")
    messages = {m.name: m for m in orders.message_type}
    status = next(e for e in orders.enum_type if e.name == "OrderStatus")
    status.value.add(name="ORDER_STATUS_FUTURE", number=FUTURE_STATUS)
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    for message, name in (
        ("ExecutionResult", "future_note"),
        ("Fill", "future_fee_decimal"),
        ("Position", "future_fee_decimal"),
        ("OrderIntent", "future_hint"),
    ):
        messages[message].field.add(
            name=name, number=FUTURE_FIELD, type=string, label=optional, json_name=name
        )
    notice = orders.message_type.add(name="FutureNotice")
    notice.field.add(name="text", number=1, type=string, label=optional, json_name="text")
    event = messages["ExecutionEvent"]
    payload = next(i for i, o in enumerate(event.oneof_decl) if o.name == "payload")
    member = descriptor_pb2.FieldDescriptorProto(
        name="future_notice",
        number=FUTURE_FIELD,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".execgw.v1.FutureNotice",
        label=optional,
        oneof_index=payload,
        json_name="futureNotice",
    )
    # A oneof's members must be declared one after the other: add it after the last.
    fields = list(event.field)
    last = max(
        i for i, f in enumerate(fields) if f.HasField("oneof_index") and f.oneof_index == payload
    )
    del event.field[:]
    event.field.extend([*fields[: last + 1], member, *fields[last + 1 :]])
    out.write_bytes(files.SerializeToString())
    return out


def popen_python_with_stubs(stubs: Path, *args: str) -> subprocess.Popen[str]:
    """Start `python ARGS` with execgw.v1 from `stubs`; stdin, stdout, stderr are pipes."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(stubs),
    )
