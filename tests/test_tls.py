"""TLS and mTLS on the listen port, the clients' `verify=`/`cert=`, the CLI's TLS
options, and the rule that a non-loopback address is served only with TLS and auth.

Certificates are made at test time (tests/tls_helpers.py). Every gateway here is real
and on loopback; a refused connection is seen as UNAVAILABLE at once (the channel is
in TRANSIENT_FAILURE and calls are not wait_for_ready), so deadlines only guard hangs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from execgw.client import (
    AsyncExecutionClient,
    ExecutionClient,
    OrderStatus,
    Quote,
    Unavailable,
    market,
)
from execgw.server.app import Gateway
from execgw.server.cli import build_parser
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError, GatewayConfig
from execgw.server.transport import InsecureListen, is_loopback_host

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
    from tests.test_cli_serve import execgw_command, free_port
    from tests.tls_helpers import Pki, make_pki
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish
    from test_cli_serve import execgw_command, free_port
    from tls_helpers import Pki, make_pki

SERVING = health_pb2.HealthCheckResponse.SERVING
# A token entry as the auth section holds it (the auth branch checks it).
TOKEN = {"name": "ops", "sha256": "0" * 64, "role": "operator"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(tmp_path: Path, pki: Pki, *, mutual: bool = False, **more: Any) -> GatewayConfig:
    server = {"tls": pki.server_tls(mutual=mutual), **more.pop("server", {})}
    return make_config(tmp_path, server=server, **more)


@pytest.fixture
def tls_gateway(tmp_path: Path, pki: Pki, clock: ManualClock) -> Iterator[RunningGateway]:
    running = RunningGateway(tls_config(tmp_path, pki), clock)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def mtls_gateway(tmp_path: Path, pki: Pki, clock: ManualClock) -> Iterator[RunningGateway]:
    running = RunningGateway(tls_config(tmp_path, pki, mutual=True), clock)
    try:
        yield running
    finally:
        running.stop()


def client(target: str, **tls: Any) -> ExecutionClient:
    # No retries: a refused handshake must show as one UNAVAILABLE, not four.
    return ExecutionClient(target, timeout=TIMEOUT_S, retries=0, **tls)


def order_and_its_fill(gw: ExecutionClient, strategy: str) -> None:
    """Submit over the channel, then stream the journal back until the order's fill."""
    publish(gw, INFY, 1500.00)
    result = gw.submit(market(INFY, "BUY", 10, strategy_code=strategy))
    assert result.status == OrderStatus.ORDER_STATUS_FILLED, result
    stream = gw.stream_fills(strategy_codes=[strategy], from_sequence=1)
    with contextlib.closing(stream):  # type: ignore[type-var]
        for event in stream:
            if event.HasField("fill") and event.fill.order_id == result.order_id:
                assert event.fill.qty == 10
                return
    raise AssertionError("the stream ended without the fill")


def orders_seen(target: str, pki: Pki) -> int:
    with client(target, verify=pki.ca.cert_file, cert=pki.client.pair) as gw:
        return len(gw.list_orders())


def assert_refused(target: str, **tls: Any) -> None:
    with client(target, **tls) as gw, pytest.raises(Unavailable):
        gw.submit(market(INFY, "BUY", 1, strategy_code="intruder"))


# --- TLS ----------------------------------------------------------------------------


def test_a_client_that_trusts_the_ca_submits_and_streams_over_tls(
    tls_gateway: RunningGateway, pki: Pki
) -> None:
    with client(tls_gateway.target, verify=str(pki.ca.cert_file)) as gw:
        assert gw.tls
        assert "tls=True" in repr(gw)
        order_and_its_fill(gw, "tls")


async def test_the_async_client_takes_the_ca_as_pem_bytes(
    tls_gateway: RunningGateway, pki: Pki
) -> None:
    async with AsyncExecutionClient(
        tls_gateway.target, timeout=TIMEOUT_S, verify=pki.ca.cert_pem
    ) as gw:
        assert gw.tls
        assert await gw.publish_quotes([Quote(symbol=INFY, ltp=1500.00)]) == 1
        result = await gw.submit(market(INFY, "SELL", 3, strategy_code="atls"))
        assert result.status == OrderStatus.ORDER_STATUS_FILLED, result
        stream = gw.stream_fills(strategy_codes=["atls"], from_sequence=1)
        async with contextlib.aclosing(stream):
            async for event in stream:
                if event.HasField("fill"):
                    assert event.fill.order_id == result.order_id
                    break


def test_health_and_reflection_are_served_over_tls_on_the_same_port(
    tls_gateway: RunningGateway, pki: Pki
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
    with grpc.secure_channel(tls_gateway.target, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        assert check.status == SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"execgw.v1.ExecutionGateway", "execgw.v1.MarketData"} <= services


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"verify": "OTHER"}, id="another-ca"),
        pytest.param({"tls": True}, id="default-roots"),
        pytest.param({}, id="plaintext"),
    ],
)
def test_a_client_that_does_not_trust_the_gateway_is_refused(
    tls_gateway: RunningGateway, pki: Pki, options: dict[str, Any]
) -> None:
    if options.get("verify") == "OTHER":
        options = {"verify": pki.other_ca.cert_file}
    assert_refused(tls_gateway.target, **options)
    assert orders_seen_tls(tls_gateway.target, pki) == 0


def orders_seen_tls(target: str, pki: Pki) -> int:
    with client(target, verify=pki.ca.cert_file) as gw:
        return len(gw.list_orders())


# --- mTLS ---------------------------------------------------------------------------


def test_mtls_client_with_a_certificate_from_the_ca_works(
    mtls_gateway: RunningGateway, pki: Pki
) -> None:
    with client(mtls_gateway.target, verify=pki.ca.cert_file, cert=pki.client.pair) as gw:
        order_and_its_fill(gw, "mtls")


def test_mtls_client_certificate_as_pem_bytes(mtls_gateway: RunningGateway, pki: Pki) -> None:
    cert = (pki.client.cert_pem, pki.client.key_pem)
    with client(mtls_gateway.target, verify=pki.ca.cert_pem, cert=cert) as gw:
        assert gw.risk_state() is not None


def test_mtls_client_without_a_certificate_cannot_connect(
    mtls_gateway: RunningGateway, pki: Pki
) -> None:
    assert_refused(mtls_gateway.target, verify=pki.ca.cert_file)
    # Health checking is on the same port, so it needs a certificate too.
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
    with grpc.secure_channel(mtls_gateway.target, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert orders_seen(mtls_gateway.target, pki) == 0


def test_mtls_client_with_a_certificate_from_another_ca_is_refused(
    mtls_gateway: RunningGateway, pki: Pki
) -> None:
    assert_refused(mtls_gateway.target, verify=pki.ca.cert_file, cert=pki.rogue_client.pair)
    assert orders_seen(mtls_gateway.target, pki) == 0


# --- the non-loopback rule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.45.6.7", True),
        ("localhost", True),
        ("LocalHost", True),
        ("[::1]", True),
        ("::1", True),
        ("[::ffff:127.0.0.1]", True),
        ("0.0.0.0", False),
        ("[::]", False),
        ("10.1.2.3", False),
        ("192.168.0.10", False),
        ("gateway.internal", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_loopback_is_127_slash_8_and_ipv6_one_and_localhost(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("tls", "auth", "missing"),
    [
        (False, False, "without TLS (server.tls) and without auth (auth.tokens)"),
        (True, False, "without auth (auth.tokens)"),
        (False, True, "without TLS (server.tls)"),
    ],
)
def test_non_loopback_without_tls_and_auth_refuses_to_start(
    tmp_path: Path, pki: Pki, tls: bool, auth: bool, missing: str
) -> None:
    config = make_config(
        tmp_path,
        listen="0.0.0.0:0",
        server={"tls": pki.server_tls()} if tls else {},
        **({"auth": {"tokens": [TOKEN]}} if auth else {}),
    )
    with pytest.raises(InsecureListen) as refused:
        Gateway(config)
    message = str(refused.value)
    assert "\n" not in message
    assert f"refusing to serve 0.0.0.0:0, which is not a loopback address, {missing}:" in message
    assert "server.insecure: true" in message
    # Refused before anything was opened.
    assert not (tmp_path / "journal.db").exists()


def test_execgw_serve_refuses_a_non_loopback_address_in_one_line_with_exit_2(
    tmp_path: Path,
) -> None:
    config = tmp_path / "execgw.yaml"
    config.write_text(f"journal:\n  path: {tmp_path / 'journal.db'}\n", encoding="utf-8")
    done = subprocess.run(
        [*execgw_command(), "serve", "--config", str(config), "--listen", "0.0.0.0:50999"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("execgw: config error: refusing to serve 0.0.0.0:50999, ")
    assert "without TLS (server.tls) and without auth (auth.tokens)" in done.stderr
    assert not (tmp_path / "journal.db").exists()


def test_insecure_true_starts_on_a_non_loopback_address_with_a_loud_warning(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, listen="0.0.0.0:0", server={"insecure": True})
    with caplog.at_level(logging.WARNING, logger="execgw.server.app"):
        running = RunningGateway(config, clock)
    try:
        [warning] = [r for r in caplog.records if "INSECURE" in r.getMessage()]
        assert warning.levelno == logging.WARNING
        assert warning.getMessage().startswith(
            f"INSECURE: serving 0.0.0.0:{running.port} without TLS (server.tls) and without "
            "auth (auth.tokens) because server.insecure is true:"
        )
        with client(running.target) as gw:  # 0.0.0.0 answers on loopback too
            publish(gw, INFY, 1500.00)
    finally:
        running.stop()


def test_non_loopback_with_tls_and_auth_starts_without_a_warning(
    tmp_path: Path, pki: Pki, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = tls_config(tmp_path, pki, mutual=True, listen="0.0.0.0:0", auth={"tokens": [TOKEN]})
    with caplog.at_level(logging.WARNING):
        running = RunningGateway(config, clock)
    try:
        assert not [r for r in caplog.records if "INSECURE" in r.getMessage()]
        # Health checking needs no token (it does need the client certificate).
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.cert_pem,
            private_key=pki.client.key_pem,
            certificate_chain=pki.client.cert_pem,
        )
        with grpc.secure_channel(running.target, credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
            assert check.status == SERVING
    finally:
        running.stop()


def test_loopback_needs_neither_tls_nor_auth(tmp_path: Path) -> None:
    for listen in ("127.0.0.1:0", "127.0.0.2:0", "localhost:0"):
        Gateway(make_config(tmp_path, listen=listen)).journal.close()


# --- TLS files -----------------------------------------------------------------------


def _bad_files(tmp_path: Path, pki: Pki) -> dict[str, tuple[dict[str, str], str]]:
    not_pem = tmp_path / "not-pem.txt"
    not_pem.write_text("hello\n", encoding="utf-8")
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    directory = tmp_path / "a-directory"
    directory.mkdir()
    good = pki.server_tls()
    missing = str(tmp_path / "nowhere.pem")
    return {
        "missing-cert": (
            {**good, "cert_file": missing},
            f"server.tls.cert_file: cannot read {missing}: No such file or directory",
        ),
        "missing-key": (
            {**good, "key_file": missing},
            f"server.tls.key_file: cannot read {missing}: No such file or directory",
        ),
        "missing-client-ca": (
            {**good, "client_ca_file": missing},
            f"server.tls.client_ca_file: cannot read {missing}: No such file or directory",
        ),
        "unreadable-key": (
            {**good, "key_file": str(directory)},
            f"server.tls.key_file: cannot read {directory}: Is a directory",
        ),
        "empty-cert": (
            {**good, "cert_file": str(empty)},
            f"server.tls.cert_file: {empty} is empty",
        ),
        "cert-not-pem": (
            {**good, "cert_file": str(not_pem)},
            f"server.tls.cert_file: {not_pem} holds no PEM certificate",
        ),
        "key-not-pem": (
            {**good, "key_file": str(not_pem)},
            f"server.tls.key_file: {not_pem} holds no PEM private key",
        ),
        "encrypted-key": (
            {**good, "key_file": str(encrypted)},
            f"server.tls.key_file: {encrypted} is encrypted",
        ),
        "key-of-another-certificate": (
            {**good, "key_file": str(pki.client.key_file)},
            "the key does not match the certificate",
        ),
        "client-ca-not-pem": (
            {**good, "client_ca_file": str(not_pem)},
            f"server.tls.client_ca_file: {not_pem} holds no PEM certificate",
        ),
    }


BAD_FILE_CASES = [
    "missing-cert",
    "missing-key",
    "missing-client-ca",
    "unreadable-key",
    "empty-cert",
    "cert-not-pem",
    "key-not-pem",
    "encrypted-key",
    "key-of-another-certificate",
    "client-ca-not-pem",
]


@pytest.mark.parametrize("case", BAD_FILE_CASES)
def test_a_bad_tls_file_is_a_one_line_config_error_naming_it(
    tmp_path: Path, pki: Pki, case: str
) -> None:
    section, expected = _bad_files(tmp_path, pki)[case]
    with pytest.raises(ConfigError) as refused:
        Gateway(make_config(tmp_path, server={"tls": section}))
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "journal.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_key_file_without_read_permission_is_a_config_error(tmp_path: Path, pki: Pki) -> None:
    key = tmp_path / "locked.key"
    key.write_bytes(pki.server.key_pem)
    key.chmod(0o000)
    with pytest.raises(ConfigError, match=f"server.tls.key_file: cannot read {key}: Permission"):
        Gateway(make_config(tmp_path, server={"tls": {**pki.server_tls(), "key_file": str(key)}}))


def test_execgw_serve_exits_2_in_one_line_on_a_missing_certificate(tmp_path: Path) -> None:
    config = tmp_path / "execgw.yaml"
    missing = tmp_path / "gateway.pem"
    config.write_text(
        f"journal:\n  path: {tmp_path / 'journal.db'}\n"
        f"server:\n  tls:\n    cert_file: {missing}\n    key_file: {tmp_path / 'gateway.key'}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            *execgw_command(),
            "serve",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"execgw: config error: server.tls.cert_file: cannot read {missing}: "
        "No such file or directory\n"
    )


def serve_process(
    tmp_path: Path, listen: str, server: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    config = tmp_path / "execgw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "journal": {"path": str(tmp_path / "journal.db")},
                "market_data": {"source": "external"},
                "server": {"shutdown_grace_s": 1.0, **server},
            }
        ),
        encoding="utf-8",
    )
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*execgw_command(), "serve", "--config", str(config), "--listen", listen],
            stdout=out,
            stderr=err,
        )
    return proc, stdout, stderr


def wait_serving_then_stop(
    proc: subprocess.Popen[bytes], channel: grpc.Channel, stderr: Path
) -> None:
    """Block on the health Watch stream until SERVING (bounded by its deadline), SIGTERM."""
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20.0, wait_for_ready=True
        )
        try:
            assert next(watch).status == SERVING, stderr.read_text(encoding="utf-8")
        finally:
            watch.cancel()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20.0) == 0, stderr.read_text(encoding="utf-8")


FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]


def test_execgw_serve_with_mtls_says_so_and_serves_health_over_it(tmp_path: Path, pki: Pki) -> None:
    port = free_port()
    proc, stdout, stderr = serve_process(
        tmp_path, f"127.0.0.1:{port}", {"tls": pki.server_tls(mutual=True)}
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem,
        private_key=pki.client.key_pem,
        certificate_chain=pki.client.cert_pem,
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, FAST_RECONNECT) as channel:
        wait_serving_then_stop(proc, channel, stderr)
    assert f"execgw listening on 127.0.0.1:{port} mode=paper tls=mtls\n" in stdout.read_text(
        encoding="utf-8"
    )


def test_execgw_serve_with_insecure_true_warns_on_stderr_and_stdout(tmp_path: Path) -> None:
    port = free_port()
    proc, stdout, stderr = serve_process(tmp_path, f"0.0.0.0:{port}", {"insecure": True})
    with grpc.insecure_channel(f"127.0.0.1:{port}", FAST_RECONNECT) as channel:
        wait_serving_then_stop(proc, channel, stderr)
    assert f"listening on 0.0.0.0:{port} mode=paper tls=off INSECURE\n" in stdout.read_text(
        encoding="utf-8"
    )
    [warning] = [
        line for line in stderr.read_text(encoding="utf-8").splitlines() if "INSECURE" in line
    ]
    assert f" WARNING execgw.server.app: INSECURE: serving 0.0.0.0:{port} without TLS" in warning


def test_a_key_readable_by_others_is_warned_about(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.server.key_pem)
    key.chmod(0o644)
    config = make_config(tmp_path, server={"tls": {**pki.server_tls(), "key_file": str(key)}})
    with caplog.at_level(logging.WARNING, logger="execgw.server.transport"):
        Gateway(config).journal.close()
    assert any(
        "mode 0644" in r.getMessage() and "chmod 600" in r.getMessage() for r in caplog.records
    )


# --- client options ------------------------------------------------------------------


def test_client_options_that_cannot_work_are_refused_at_construction(
    tmp_path: Path, pki: Pki
) -> None:
    target = "127.0.0.1:1"
    with pytest.raises(ValueError, match="verify=False is not supported"):
        ExecutionClient(target, verify=False)
    with pytest.raises(ValueError, match="tls=False cannot be combined"):
        ExecutionClient(target, tls=False, verify=pki.ca.cert_file)
    with pytest.raises(TypeError, match="pair"):
        ExecutionClient(target, cert=str(pki.client.cert_file))  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        ExecutionClient(target, verify=tmp_path / "nowhere.pem")
    with pytest.raises(ValueError, match="verify: the bytes given holds no PEM certificate"):
        ExecutionClient(target, verify=b"not a certificate")
    with pytest.raises(ValueError, match=r"cert\[1\]: .* holds no PEM private key"):
        ExecutionClient(target, cert=(pki.client.cert_file, pki.client.cert_file))
    with ExecutionClient(target) as plain:
        assert not plain.tls
        assert "tls" not in repr(plain)


# --- the CLI's TLS options -----------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_commands_take_tls_options(
    mtls_gateway: RunningGateway, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["risk", "--json", "--target", mtls_gateway.target]
    tls = ["--ca-file", str(pki.ca.cert_file)]
    cert = ["--cert-file", str(pki.client.cert_file), "--key-file", str(pki.client.key_file)]
    code, out, err = run_cli([*base, *tls, *cert], capsys)
    assert code == 0, err
    assert isinstance(json.loads(out), dict)
    code, _, err = run_cli([*base, *tls], capsys)
    assert (code, err.startswith("execgw: UNAVAILABLE")) == (1, True), err
    code, _, err = run_cli([*base, *tls, "--cert-file", str(pki.client.cert_file)], capsys)
    assert code == 2
    assert err == "execgw: --cert-file and --key-file go together (client certificate and key)\n"
    code, _, err = run_cli([*base, "--ca-file", str(pki.ca.cert_file) + ".missing"], capsys)
    assert code == 2
    assert err.startswith("execgw: cannot read ")
    assert "No such file" in err


def test_cli_tls_options_default_to_environment_variables(
    mtls_gateway: RunningGateway,
    pki: Pki,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECGW_CA_FILE", str(pki.ca.cert_file))
    monkeypatch.setenv("EXECGW_CERT_FILE", str(pki.client.cert_file))
    monkeypatch.setenv("EXECGW_KEY_FILE", str(pki.client.key_file))
    code, _, err = run_cli(["orders", "--target", mtls_gateway.target], capsys)
    assert code == 0, err
