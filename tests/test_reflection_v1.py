"""Server reflection is served as grpc.reflection.v1 (what grpcurl and buf curl ask for
first) as well as v1alpha, each listing the same services and describing the contract.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from execgw.client import ExecutionClient

if TYPE_CHECKING:
    from tests.conftest import RunningGateway
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway
    from e2e_helpers import INFY, TIMEOUT_S, publish

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_SERVICES = {
    "execgw.v1.ExecutionGateway",
    "execgw.v1.MarketData",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def _ask(
    channel: grpc.Channel, version: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    # v1 and v1alpha messages are the same on the wire: one set of classes serves both.
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=TIMEOUT_S))


@pytest.fixture
def channel(gateway: RunningGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.target) as ch:
        yield ch


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_every_service(channel: grpc.Channel, version: str) -> None:
    [response] = _ask(channel, version, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert names == EXPECTED_SERVICES


def _files(response: reflection_pb2.ServerReflectionResponse) -> list[Any]:
    files = []
    for raw in response.file_descriptor_response.file_descriptor_proto:
        files.append(descriptor_pb2.FileDescriptorProto.FromString(raw))
    return files


def test_reflection_v1_describes_the_contract_and_itself(channel: grpc.Channel) -> None:
    gateway, itself = _ask(
        channel,
        "v1",
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="execgw.v1.SubmitOrderRequest"
        ),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    )
    files = {f.name: f for f in _files(gateway)}
    assert "execgw/v1/gateway.proto" in files
    [service] = files["execgw/v1/gateway.proto"].service
    assert "SubmitOrder" in {m.name for m in service.method}
    [v1] = _files(itself)
    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    [method] = v1.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"


def _buf() -> str:
    found = shutil.which("buf", path=str(ROOT / "node_modules" / ".bin"))
    if found is None:
        pytest.skip("buf is not installed (npm ci)")
    return found


def test_buf_curl_finds_the_services_by_reflection_v1(gateway: RunningGateway) -> None:
    """The tool the contract doc shows, asking for grpc.reflection.v1 only."""
    buf = _buf()
    listed = subprocess.run(
        [
            buf,
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--reflect-protocol",
            "grpc-v1",
            "--list-services",
            f"http://{gateway.target}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {"execgw.v1.ExecutionGateway", "execgw.v1.MarketData"} <= set(listed.stdout.split())

    with ExecutionClient(gateway.target) as client:
        publish(client, INFY, 1500.0)
    answer = subprocess.run(
        [
            buf,
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--reflect-protocol",
            "grpc-v1",
            "-d",
            '{"symbol": "NSE:INFY"}',
            f"http://{gateway.target}/execgw.v1.MarketData/GetQuote",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    quote = json.loads(answer.stdout)["quote"]
    assert (quote["ltp"], quote["ltpDecimal"]) == (1500, "1500.0")
