"""Field violations from a gRPC error's `grpc-status-details-bin` trailer.

The gateway sends a `google.rpc.Status` there whose details hold a
`google.rpc.BadRequest`. The client depends on grpcio and protobuf alone, not on
googleapis-common-protos, so it reads them with private copies of the two messages
(same field numbers, so the same wire form) kept in a descriptor pool of their own:
nothing clashes with `google.rpc` when a program also imports it. Fields that a newer
`FieldViolation` adds (reason, localized message) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

DETAILS_METADATA_KEY = "grpc-status-details-bin"
BAD_REQUEST_TYPE = "google.rpc.BadRequest"

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    repeated: bool = False,
    type_name: str = "",
) -> None:
    field = message.field.add(name=name, number=number, type=kind)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name


def _messages() -> tuple[Any, Any]:
    package = "execgw.client.rpc_mirror"
    file = descriptor_pb2.FileDescriptorProto(
        name="execgw/client/rpc_mirror.proto", package=package, syntax="proto3"
    )
    any_ = file.message_type.add(name="Any")
    _field(any_, "type_url", 1, _F.TYPE_STRING)
    _field(any_, "value", 2, _F.TYPE_BYTES)
    status = file.message_type.add(name="Status")
    _field(status, "code", 1, _F.TYPE_INT32)
    _field(status, "message", 2, _F.TYPE_STRING)
    _field(status, "details", 3, _F.TYPE_MESSAGE, repeated=True, type_name=f".{package}.Any")
    violation = file.message_type.add(name="FieldViolation")
    _field(violation, "field", 1, _F.TYPE_STRING)
    _field(violation, "description", 2, _F.TYPE_STRING)
    bad_request = file.message_type.add(name="BadRequest")
    _field(
        bad_request,
        "field_violations",
        1,
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=f".{package}.FieldViolation",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Status")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.BadRequest")),
    )


_Status, _BadRequest = _messages()


def field_violations(trailing_metadata: Iterable[tuple[str, Any]] | None) -> list[tuple[str, str]]:
    """(field, description) of every violation in the BadRequest details; [] when there
    are none or they cannot be read."""
    found: list[tuple[str, str]] = []
    for key, value in trailing_metadata or ():
        if key != DETAILS_METADATA_KEY or not isinstance(value, bytes):
            continue
        try:
            status = _Status.FromString(value)
            for detail in status.details:
                if detail.type_url.rpartition("/")[2] == BAD_REQUEST_TYPE:
                    bad_request = _BadRequest.FromString(detail.value)
                    found.extend((v.field, v.description) for v in bad_request.field_violations)
        except DecodeError:
            return []
    return found
