"""Server reflection as `grpc.reflection.v1`, beside grpcio-reflection's `v1alpha`.

grpcio-reflection (through 1.85) serves only `grpc.reflection.v1alpha.ServerReflection`;
current tools (grpcurl, buf curl, Postman, grpcui) ask for `grpc.reflection.v1` first.
The two protocols are the same messages under another package name, field for field,
so the v1 file is derived from the v1alpha descriptor at start-up (package renamed) and
registered in the default descriptor pool, where reflection itself can describe it; its
calls are answered by the same servicer as v1alpha's.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
V1_PACKAGE = "grpc.reflection.v1"
SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
_METHOD = "ServerReflectionInfo"
_FILE_NAME = "grpc/reflection/v1/reflection.proto"


def _v1_file(pool: Any) -> Any:
    """The v1 reflection FileDescriptor, added to `pool` once."""
    try:
        return pool.FindFileByName(_FILE_NAME)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _FILE_NAME
    proto.package = V1_PACKAGE
    proto.options.Clear()
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(f".{V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(V1ALPHA_PACKAGE, V1_PACKAGE)
            method.output_type = method.output_type.replace(V1ALPHA_PACKAGE, V1_PACKAGE)
    pool.Add(proto)
    return pool.FindFileByName(_FILE_NAME)


def enable_v1(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """Serve grpc.reflection.v1 on `server`, listing `service_names` (include SERVICE_NAME
    and the v1alpha name in them to have both listed)."""
    _v1_file(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer(service_names)

    def decode(raw: bytes) -> Any:
        # A v1 request is a v1alpha request on the wire, and the servicer's answers are
        # v1 answers on the wire.
        return reflection_pb2.ServerReflectionRequest.FromString(raw)

    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            _METHOD: grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=decode,
                response_serializer=lambda response: response.SerializeToString(),
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
