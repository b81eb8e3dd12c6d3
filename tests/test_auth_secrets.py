"""Secrets never leave the gateway: tokens, token hashes and broker credentials appear in
no log, trace, error, journal or export.

`execgw serve` runs with auth on, the log at DEBUG and spans exported to a JSON-lines
file; every path that could log is driven (calls allowed and refused, unauthenticated
calls with bad tokens and with a stored hash presented as a token, the CLI with its
token in the environment and in a file, its failures); then the server's output, the
traces, the journal files, `journal export` (jsonl and csv), the CLI's output and every
client exception are searched for each secret value. None may be found.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from execgw.client import ExecgwError, ExecutionClient, Quote, limit, market
from execgw.server.tokens import new_token, token_digest

if TYPE_CHECKING:
    from tests.auth_helpers import INFY, TOKENS, auth_section
    from tests.durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port, run_cli
else:
    from auth_helpers import INFY, TOKENS, auth_section
    from durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port, run_cli

BROKER_ENV = {
    "KITE_API_KEY": "kiteapikey" + new_token()[:16],
    "KITE_API_SECRET": "kitesecret" + new_token()[:16],
    "KITE_ACCESS_TOKEN": "kiteaccess" + new_token()[:16],
}
TIMEOUT_S = 10.0


def _secrets(extra_tokens: list[str]) -> dict[str, str]:
    """Every value that must not appear, by a name for the failure message."""
    found: dict[str, str] = {}
    for name, token in {**TOKENS, **{f"bad-{i}": t for i, t in enumerate(extra_tokens)}}.items():
        digest = token_digest(token)
        found[f"token of {name}"] = token
        found[f"sha256 of {name}"] = digest
        found[f"SHA256 of {name}"] = digest.upper()
    for name, value in BROKER_ENV.items():
        found[name] = value
    return found


def _write_config(directory: Path, port: int) -> Path:
    data: dict[str, Any] = {
        "mode": "paper",
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(directory / "journal.db")},
        "market_data": {"source": "external"},
        "execution": RELAXED_EXECUTION,
        "telemetry": {"exporter": "jsonl", "path": str(directory / "traces.jsonl")},
        "server": {"shutdown_grace_s": 1.0},
        "auth": auth_section(),
    }
    path = directory / "execgw.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _drive_clients(target: str, bad_tokens: list[str], outputs: list[str]) -> None:
    """Calls allowed and refused; every client exception is kept as text."""

    def attempt(call: Any) -> None:
        try:
            call()
        except ExecgwError as e:
            outputs.extend([str(e), repr(e), e.details])

    def as_(name: str) -> ExecutionClient:
        gw = ExecutionClient(target, timeout=TIMEOUT_S, retries=0, auth=TOKENS[name])
        outputs.append(repr(gw))
        return gw

    with as_("feed") as feed, as_("strat-a") as a, as_("ops") as ops:
        assert feed.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
        placed = a.submit(market(INFY, "BUY", 5, strategy_code="A", product="NRML"))
        resting = a.submit(limit(INFY, "BUY", 5, 1450.0, strategy_code="A", product="NRML"))
        a.cancel(resting.order_id)
        a.get_order(placed.order_id)
        a.preview(market(INFY, "SELL", 5, strategy_code="A", product="NRML"))
        a.list_orders(strategy_code="A")
        a.risk_state("A")
        for _ in a.stream_fills(strategy_codes=["A"], from_sequence=1):
            break  # one replayed fill; leaving the loop cancels the call
        ops.halt("secrets test")
        ops.resume("secrets test")
        # Refused: another strategy, the wrong role, an actor not the token's, bad input.
        attempt(lambda: a.submit(market(INFY, "BUY", 1, strategy_code="B")))
        attempt(lambda: a.positions())
        attempt(lambda: a.halt("no"))
        attempt(lambda: ops.halt("no", actor="someone-else"))
        attempt(lambda: feed.submit(market(INFY, "BUY", 1, strategy_code="A")))
        attempt(lambda: a.cancel("O9999999999"))
        attempt(lambda: a.submit(market("bad symbol", "BUY", 1, strategy_code="A")))
    presented = [*bad_tokens, token_digest(TOKENS["ops"])]  # a stored hash is no token
    for token in presented:
        with ExecutionClient(target, timeout=TIMEOUT_S, retries=0, auth=token) as gw:
            outputs.append(repr(gw))
            attempt(lambda gw=gw: gw.get_quote(INFY))
            attempt(lambda gw=gw: gw.submit(market(INFY, "BUY", 1, strategy_code="A")))
            attempt(lambda gw=gw: next(gw.stream_fills(reconnect=False)))
    with ExecutionClient(target, timeout=TIMEOUT_S, retries=0) as anonymous:
        attempt(lambda: anonymous.list_orders())


def _drive_cli(target: str, directory: Path, bad_tokens: list[str], outputs: list[str]) -> None:
    token_file = directory / "ops.token"
    token_file.write_text(TOKENS["ops"] + "\n", encoding="utf-8")
    bad_file = directory / "bad.token"
    bad_file.write_text(f"{bad_tokens[0]} trailing words\n", encoding="utf-8")
    common = ("--target", target)
    runs = [
        ({"EXECGW_TOKEN": TOKENS["strat-a"]}, ["orders", *common, "--strategy", "A"]),
        ({"EXECGW_TOKEN": TOKENS["strat-a"]}, ["positions", *common, "--strategy", "A"]),
        ({"EXECGW_TOKEN": TOKENS["strat-a"]}, ["positions", *common]),  # refused
        (
            {"EXECGW_TOKEN": TOKENS["strat-a"]},
            ["submit", INFY, "BUY", "1", *common, "--strategy", "A", "--product", "NRML"],
        ),
        ({"EXECGW_TOKEN": TOKENS["strat-a"]}, ["cancel", "O9999999999", *common]),
        ({}, ["halt", *common, "--reason", "cli", "--token-file", str(token_file)]),
        ({}, ["resume", *common, "--reason", "cli", "--token-file", str(token_file)]),
        ({}, ["risk", *common, "--token-file", str(token_file)]),
        (
            {},
            [
                "tail",
                *common,
                "--token-file",
                str(token_file),
                "--from-sequence",
                "1",
                "--limit",
                "3",
            ],
        ),
        ({"EXECGW_TOKEN": bad_tokens[1]}, ["orders", *common]),
        ({}, ["orders", *common]),
        ({}, ["orders", *common, "--token-file", str(bad_file)]),
        ({}, ["orders", *common, "--token-file", str(directory / "missing.token")]),
    ]
    for env, args in runs:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            result = run_cli(*args, timeout=30.0)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        outputs.extend([result.stdout, result.stderr])


def test_no_secret_appears_in_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BROKER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EXECGW_TOKEN", raising=False)
    bad_tokens = [new_token(), new_token()]
    port = free_port()
    config = _write_config(tmp_path, port)
    outputs: list[str] = []
    server = ServerProcess(config, port, log_level="DEBUG")
    try:
        server.wait_serving()
        _drive_clients(server.target, bad_tokens, outputs)
        _drive_cli(server.target, tmp_path, bad_tokens, outputs)
        assert server.terminate() == 0  # flushes the span exporter
    finally:
        server.close()
    log = server.output
    traces = (tmp_path / "traces.jsonl").read_text(encoding="utf-8")
    journal_files = {
        path.name: path.read_bytes().decode("latin-1")
        for path in tmp_path.iterdir()
        if path.name.startswith("journal.db")
    }
    exports = {}
    for fmt in ("jsonl", "csv"):
        result = run_cli("journal", "export", "--config", str(config), "--format", fmt)
        assert result.returncode == 0, result.stderr
        exports[fmt] = result.stdout + result.stderr
    verify = run_cli("journal", "verify", "--config", str(config))
    assert verify.returncode == 0, verify.stderr

    # Each path was really taken, so a clean search means something.
    assert "access denied to 'strat-a'" in log
    assert "unauthenticated call to" in log
    assert "DEBUG" in log
    assert "execgw.v1.ExecutionGateway/SubmitOrder" in traces
    assert '"kind": "AccessDenied"' in exports["jsonl"]
    assert '"placed_by": "strat-a"' in exports["jsonl"]
    assert '"actor": "ops"' in exports["jsonl"]  # the CLI halted as its token's name
    assert "AccessDenied" in exports["csv"]
    cli_and_errors = "\n".join(outputs)
    assert "UNAUTHENTICATED" in cli_and_errors
    assert "PERMISSION_DENIED" in cli_and_errors
    assert "cannot read --token-file" in cli_and_errors

    places = {
        "server log": log,
        "traces": traces,
        **{f"journal file {name}": text for name, text in journal_files.items()},
        **{f"journal export {fmt}": text for fmt, text in exports.items()},
        "journal verify": verify.stdout + verify.stderr,
        "CLI output and client errors": cli_and_errors,
    }
    leaks = [
        f"{what} in {where}"
        for what, value in _secrets(bad_tokens).items()
        for where, text in places.items()
        if value in text
    ]
    assert leaks == []
