"""Generate docs/contract.md from the execgw.v1 protos and their comments.

The reference part (services, messages, enums) comes from the descriptors that protoc
builds with `--include_source_info`, comments included, so the document cannot drift
from the contract; the hand-written parts around it live in tools/contract/*.md.

    python tools/gencontract.py docs/contract.md     # write it (`make proto` does)
    python tools/gencontract.py                      # print it

tests/test_contract_doc.py fails when docs/contract.md is not what this produces.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PARTS = Path(__file__).resolve().parent / "contract"
PACKAGE = "execgw.v1"

# Paths into FileDescriptorProto, as SourceCodeInfo.Location.path numbers them.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM = 2, 3, 4
_VALUE, _METHOD = 2, 2

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _F.TYPE_DOUBLE: "double",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_INT64: "int64",
    _F.TYPE_UINT64: "uint64",
    _F.TYPE_INT32: "int32",
    _F.TYPE_FIXED64: "fixed64",
    _F.TYPE_FIXED32: "fixed32",
    _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "bytes",
    _F.TYPE_UINT32: "uint32",
    _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64",
    _F.TYPE_SINT32: "sint32",
    _F.TYPE_SINT64: "sint64",
}
_WELL_KNOWN = "https://protobuf.dev/reference/protobuf/google.protobuf/#"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The contract's files, with comments, compiled by grpc_tools' protoc."""
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "execgw" / "v1").glob("*.proto")
    )
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "contract.binpb"
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


class _Comments:
    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {
            tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location
        }

    def of(self, *path: int) -> str:
        """The leading comment at `path`, with the comment markers' leading space removed."""
        text = self._by_path.get(path, "")
        lines = [line[1:] if line.startswith(" ") else line for line in text.split("\n")]
        return "\n".join(lines).strip()


def _anchor(name: str) -> str:
    return name.lower().replace(".", "")


def _type_link(type_name: str) -> str:
    name = type_name.lstrip(".")
    if name.startswith(PACKAGE + "."):
        short = name.removeprefix(PACKAGE + ".")
        return f"[{short}](#{_anchor(short)})"
    if name.startswith("google.protobuf."):
        short = name.removeprefix("google.protobuf.")
        return f"[{name}]({_WELL_KNOWN}{short.lower()})"
    return name


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    kind = _SCALARS.get(field.type) or _type_link(field.type_name)
    if field.label == _F.LABEL_REPEATED:
        return f"repeated {kind}"
    if field.proto3_optional:
        return f"optional {kind}"
    return kind


def _cell(text: str) -> str:
    """A comment as one table cell: paragraphs kept with <br>, pipes escaped."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "<br><br>".join(p for p in paragraphs if p).replace("|", "\\|")


def _messages(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...]]]:
    def walk(
        message: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...]
    ) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...]]]:
        name = f"{prefix}{message.name}"
        yield name, message, path
        for index, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:
                yield from walk(nested, f"{name}.", (*path, _NESTED, index))

    for index, message in enumerate(file.message_type):
        yield from walk(message, "", (_MESSAGE, index))


def _service(
    service: descriptor_pb2.ServiceDescriptorProto, index: int, comments: _Comments
) -> list[str]:
    out = [f"### {service.name}", "", comments.of(_SERVICE, index), ""]
    for number, method in enumerate(service.method):
        request = _type_link(method.input_type)
        response = _type_link(method.output_type)
        if method.client_streaming:
            request = f"stream {request}"
        if method.server_streaming:
            response = f"stream {response}"
        out += [
            f"#### {service.name}.{method.name}",
            "",
            f"`rpc {method.name}` ({request}) returns ({response})",
            "",
            comments.of(_SERVICE, index, _METHOD, number),
            "",
        ]
    return out


def _message(
    name: str,
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    comments: _Comments,
) -> list[str]:
    out = [f"### {name}", "", comments.of(*path), ""]
    if not message.field:
        return [*out, "No fields.", ""]
    out += ["| field | # | type | meaning |", "|---|---|---|---|"]
    for index, field in enumerate(message.field):
        meaning = _cell(comments.of(*path, _FIELD, index))
        if field.HasField("oneof_index") and not field.proto3_optional:
            oneof = message.oneof_decl[field.oneof_index].name
            meaning = f"One of `{oneof}`. {meaning}"
        out.append(f"| `{field.name}` | {field.number} | {_field_type(field)} | {meaning} |")
    return [*out, ""]


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], comments: _Comments
) -> list[str]:
    out = [
        f"### {enum.name}",
        "",
        comments.of(*path),
        "",
        "| value | # | meaning |",
        "|---|---|---|",
    ]
    for index, value in enumerate(enum.value):
        meaning = _cell(comments.of(*path, _VALUE, index))
        out.append(f"| `{value.name}` | {value.number} | {meaning} |")
    return [*out, ""]


def reference(files: descriptor_pb2.FileDescriptorSet) -> str:
    ours = [f for f in files.file if f.package == PACKAGE]
    services: list[str] = []
    messages: list[str] = []
    enums: list[str] = []
    for file in ours:
        comments = _Comments(file)
        for index, service in enumerate(file.service):
            services += _service(service, index, comments)
        for name, message, path in _messages(file):
            messages += _message(name, message, path, comments)
            for index, enum in enumerate(message.enum_type):
                enums += _enum(enum, (*path, _NESTED_ENUM, index), comments)
        for index, enum in enumerate(file.enum_type):
            enums += _enum(enum, (_ENUM, index), comments)
    sections = [
        "## Services",
        "",
        *services,
        "## Messages",
        "",
        *messages,
        "## Enums",
        "",
        *enums,
    ]
    return "\n".join(sections)


def render() -> str:
    header = (
        "<!-- Generated by tools/gencontract.py from proto/execgw/v1/*.proto and "
        "tools/contract/*.md; `make proto` rewrites it. Edit those, not this file. -->"
    )
    parts = [
        header,
        (PARTS / "intro.md").read_text(encoding="utf-8").strip(),
        reference(descriptor_set()).strip(),
        (PARTS / "languages.md").read_text(encoding="utf-8").strip(),
    ]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
