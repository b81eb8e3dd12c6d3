"""`execgw kite session --request-token T`: Kite's login exchange through the real SDK,
against the Kite stand-in. One line on stdout to export; the secret never shown."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from kiteconnect import KiteConnect

from execgw.server import cli
from execgw.server.cli_kite import KiteExit

if TYPE_CHECKING:
    from tests.durability_helpers import execgw_command, free_port
    from tests.kite_standin import KiteStandIn
else:
    from durability_helpers import execgw_command, free_port
    from kite_standin import KiteStandIn

KITE_ENV = ("KITE_API_KEY", "KITE_API_SECRET", "KITE_ACCESS_TOKEN")
API_KEY = "kitekey0001"
API_SECRET = "kitesecret-0b8f2e9a"
ACCESS_TOKEN = "dailytoken0001"


@pytest.fixture
def standin() -> Iterator[KiteStandIn]:
    with KiteStandIn(api_key=API_KEY, api_secret=API_SECRET, access_token=ACCESS_TOKEN) as s:
        yield s


def config_for(tmp_path: Path, root: str) -> Path:
    path = tmp_path / "kite.yaml"
    path.write_text(yaml.safe_dump({"broker": {"kite": {"root": root}}}), encoding="utf-8")
    return path


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KITE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KITE_API_KEY", API_KEY)
    monkeypatch.setenv("KITE_API_SECRET", API_SECRET)


def session(config: Path, token: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["kite", "session", "--request-token", token, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_session_prints_one_export_line_and_the_token_works(
    tmp_path: Path,
    standin: KiteStandIn,
    credentials: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = session(config_for(tmp_path, standin.url), "reqtoken-A1", capsys)
    assert code == KiteExit.OK, err
    assert out == f"export KITE_ACCESS_TOKEN={ACCESS_TOKEN}\n"
    assert "logged in to Kite as AB1234" in err
    assert API_SECRET not in out + err
    # The SDK's exchange, exactly: api_key, request_token and Kite's checksum.
    (call,) = standin.requests
    assert (call.method, call.path) == ("POST", "/session/token")
    checksum = hashlib.sha256(f"{API_KEY}reqtoken-A1{API_SECRET}".encode()).hexdigest()
    assert call.form == {"api_key": API_KEY, "request_token": "reqtoken-A1", "checksum": checksum}
    assert API_SECRET not in str(call)
    # The printed token is the one Kite takes.
    token = out.strip().partition("=")[2]
    profile = KiteConnect(API_KEY, access_token=token, root=standin.url).profile()
    assert profile["user_id"] == "AB1234"


def test_a_wrong_secret_is_a_clear_refusal_that_never_shows_it(
    tmp_path: Path,
    standin: KiteStandIn,
    credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "not-the-secret-77a1"
    monkeypatch.setenv("KITE_API_SECRET", wrong)
    code, out, err = session(config_for(tmp_path, standin.url), "reqtoken-B1", capsys)
    assert code == KiteExit.REFUSED
    assert out == ""
    assert "Kite refused the login (TokenException): Invalid `checksum`." in err
    assert "KITE_API_SECRET" in err
    assert wrong not in err
    assert API_SECRET not in err
    assert "Traceback" not in err


def test_a_request_token_works_once(
    tmp_path: Path,
    standin: KiteStandIn,
    credentials: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_for(tmp_path, standin.url)
    assert session(config, "reqtoken-C1", capsys)[0] == KiteExit.OK
    code, out, err = session(config, "reqtoken-C1", capsys)
    assert code == KiteExit.REFUSED
    assert out == ""
    assert "Token is invalid or has expired." in err


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        (("KITE_API_SECRET",), "needs KITE_API_SECRET in the environment"),
        (("KITE_API_KEY",), "needs KITE_API_KEY in the environment"),
        (("KITE_API_KEY", "KITE_API_SECRET"), "needs KITE_API_KEY and KITE_API_SECRET"),
    ],
)
def test_missing_environment_is_named_and_nothing_is_sent(
    tmp_path: Path,
    standin: KiteStandIn,
    credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unset: tuple[str, ...],
    named: str,
) -> None:
    for name in unset:
        monkeypatch.delenv(name)
    code, out, err = session(config_for(tmp_path, standin.url), "reqtoken-D1", capsys)
    assert code == KiteExit.USAGE
    assert out == ""
    assert named in err
    assert API_SECRET not in err
    assert standin.requests == []


def test_an_unreachable_kite_is_a_one_line_error(
    tmp_path: Path, credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    root = f"http://127.0.0.1:{free_port()}"
    code, out, err = session(config_for(tmp_path, root), "reqtoken-E1", capsys)
    assert code == KiteExit.REFUSED
    assert out == ""
    assert err == f"execgw: kite session: cannot reach Kite at {root} (ConnectionError)\n"


def test_a_bad_config_is_a_usage_error(
    tmp_path: Path, credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("broker: {kite: {rooot: x}}\n", encoding="utf-8")
    code, out, err = session(path, "reqtoken-F1", capsys)
    assert code == KiteExit.USAGE
    assert out == ""
    assert "broker.kite.rooot: unknown key 'rooot'; did you mean 'root'?" in err


def test_the_console_script_exports_the_token(tmp_path: Path, standin: KiteStandIn) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KITE_ENV}
    env.update(KITE_API_KEY=API_KEY, KITE_API_SECRET=API_SECRET)
    config = config_for(tmp_path, standin.url)
    result = subprocess.run(
        [
            *execgw_command(),
            "kite",
            "session",
            "--request-token",
            "reqtoken-G1",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"export KITE_ACCESS_TOKEN={ACCESS_TOKEN}\n"
    assert API_SECRET not in result.stdout + result.stderr
    # What the shell then does with it.
    shell = subprocess.run(
        ["sh", "-c", 'eval "$1" && printf %s "$KITE_ACCESS_TOKEN"', "sh", result.stdout],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert shell.stdout == ACCESS_TOKEN
