"""The `auth` config section and `execgw token new`: what a token entry must hold, and
that a token made by the command, with the entry it prints, authenticates for real."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from execgw.client import PermissionDenied, Unauthenticated, market
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError, parse_config

if TYPE_CHECKING:
    from tests.auth_helpers import INFY, client
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import run_cli
else:
    from auth_helpers import INFY, client
    from conftest import RunningGateway, make_config
    from durability_helpers import run_cli

from execgw.client import ExecutionClient, Quote

DIGEST = hashlib.sha256(b"not a real token").hexdigest()
# Something a careless operator could paste where the hash belongs: the token itself.
PASTED_TOKEN = "Zm9yZ290LXRvLWhhc2gtdGhpcy10b2tlbi1iZWZvcmUtcGFzdGluZw"


def _auth(*tokens: dict[str, Any], **extra: Any) -> Any:
    return parse_config({"auth": {"tokens": list(tokens), **extra}}, source="test").auth


def _refusal(*tokens: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        _auth(*tokens, **extra)
    return str(raised.value)


def test_no_auth_section_means_auth_off() -> None:
    assert parse_config({}, source="test").auth is None


def test_a_token_entry_with_its_defaults() -> None:
    auth = _auth(
        {"name": "alpha", "sha256": DIGEST.upper(), "role": "strategy", "strategies": ["mom"]},
        {"name": "ops", "sha256": hashlib.sha256(b"2").hexdigest(), "role": "operator"},
    )
    alpha, ops = auth.tokens
    assert alpha.sha256 == DIGEST  # stored lower case, as hexdigest() spells it
    assert (alpha.role, alpha.strategies, ops.strategies) == ("strategy", ["mom"], [])
    assert (auth.max_streams_per_token, auth.orders_per_second, auth.order_burst) == (8, 10.0, 10)
    assert (alpha.max_streams, alpha.orders_per_second, alpha.order_burst) == (None, None, None)
    assert DIGEST not in repr(auth)


@pytest.mark.parametrize(
    ("entry", "key", "says"),
    [
        ({"role": "strategy"}, "auth.tokens.0", "no strategies"),
        ({"role": "operator", "strategies": ["mom"]}, "auth.tokens.0", "strategy role only"),
        ({"role": "market_data", "strategies": ["mom"]}, "auth.tokens.0", "strategy role only"),
        ({"role": "admin"}, "auth.tokens.0.role", "'strategy', 'operator' or 'market_data'"),
        ({"role": "strategy", "strategies": ["a b"]}, "auth.tokens.0.strategies", "strategy code"),
        ({"role": "strategy", "strategies": ["a", "a"]}, "auth.tokens.0.strategies", "twice"),
        ({"role": "operator", "name": "two words"}, "auth.tokens.0.name", "letters, digits"),
        ({"role": "operator", "name": ""}, "auth.tokens.0.name", "letters, digits"),
        ({"role": "operator", "sha256": DIGEST[:-1]}, "auth.tokens.0.sha256", "64 hex"),
        ({"role": "operator", "sha256": DIGEST[:-1] + "g"}, "auth.tokens.0.sha256", "64 hex"),
        ({"role": "operator", "max_streams": -1}, "auth.tokens.0.max_streams", "or equal to 0"),
        ({"role": "operator", "order_burst": 0}, "auth.tokens.0.order_burst", "or equal to 1"),
        ({"role": "operator", "extra": 1}, "auth.tokens.0.extra", "unknown key"),
    ],
)
def test_a_bad_token_entry_is_refused_naming_its_key(
    entry: dict[str, Any], key: str, says: str
) -> None:
    message = _refusal({"name": "t", "sha256": DIGEST, **entry})
    assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message), message
    assert says in message


def test_a_token_pasted_where_its_hash_belongs_is_refused_and_not_shown() -> None:
    message = _refusal({"name": "t", "sha256": PASTED_TOKEN, "role": "operator"})
    assert "auth.tokens.0.sha256" in message
    assert PASTED_TOKEN not in message


def test_names_and_hashes_are_unique() -> None:
    other = hashlib.sha256(b"other").hexdigest()
    same_name = _refusal(
        {"name": "t", "sha256": DIGEST, "role": "operator"},
        {"name": "t", "sha256": other, "role": "operator"},
    )
    assert "two tokens are named 't'" in same_name
    same_hash = _refusal(
        {"name": "t", "sha256": DIGEST, "role": "operator"},
        {"name": "u", "sha256": DIGEST, "role": "market_data"},
    )
    assert "'t' and 'u' have the same sha256" in same_hash
    assert DIGEST not in same_hash


def test_auth_with_no_tokens_is_refused() -> None:
    assert "auth.tokens" in _refusal()
    with pytest.raises(ConfigError, match=r"auth\.tokens"):
        parse_config({"auth": {}}, source="test")


# -- execgw token new -----------------------------------------------------------------


def _token_new(*args: str) -> tuple[str, list[dict[str, Any]]]:
    result = run_cli("token", "new", *args)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    token, entry = lines[0], yaml.safe_load("\n".join(lines[1:]))
    return token, entry


def test_token_new_prints_a_fresh_token_and_the_entry_holding_its_hash() -> None:
    token, entry = _token_new("--name", "alpha", "--role", "strategy", "--strategy", "mom")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # 32 random bytes, URL-safe base64
    assert entry == [
        {
            "name": "alpha",
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
            "role": "strategy",
            "strategies": ["mom"],
        }
    ]
    again, _ = _token_new("--name", "alpha", "--role", "strategy", "--strategy", "mom")
    assert again != token
    operator_token, operator = _token_new("--name", "ops", "--role", "operator")
    assert operator == [
        {
            "name": "ops",
            "sha256": hashlib.sha256(operator_token.encode()).hexdigest(),
            "role": "operator",
        }
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "alpha", "--role", "strategy"],
        ["--name", "ops", "--role", "operator", "--strategy", "mom"],
        ["--name", "two words", "--role", "operator"],
        ["--name", "alpha", "--role", "strategy", "--strategy", "no good"],
    ],
)
def test_token_new_refuses_an_entry_the_config_would_refuse(args: list[str]) -> None:
    result = run_cli("token", "new", *args)
    assert result.returncode == 2
    assert result.stdout == ""  # no token printed for an entry that cannot be used
    assert "token new:" in result.stderr


def test_a_token_from_token_new_works_with_the_entry_it_printed(
    tmp_path: Path, clock: ManualClock
) -> None:
    token, entry = _token_new("--name", "alpha", "--role", "strategy", "--strategy", "mom")
    feed_token, feed_entry = _token_new("--name", "feed", "--role", "market_data")
    config_file = tmp_path / "auth.yaml"
    config_file.write_text(yaml.safe_dump({"auth": {"tokens": entry + feed_entry}}))
    auth = yaml.safe_load(config_file.read_text())["auth"]
    running = RunningGateway(make_config(tmp_path, auth=auth), clock)
    try:
        with ExecutionClient(running.target, auth=feed_token, retries=0) as feed:
            assert feed.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
        with ExecutionClient(running.target, auth=token, retries=0) as alpha:
            placed = alpha.submit(market(INFY, "BUY", 1, strategy_code="mom", product="NRML"))
            assert alpha.get_order(placed.order_id).order_id == placed.order_id
            with pytest.raises(PermissionDenied):
                alpha.submit(market(INFY, "BUY", 1, strategy_code="other", product="NRML"))
        stored_hash = entry[0]["sha256"]
        with (
            ExecutionClient(running.target, auth=stored_hash, retries=0) as hash_only,
            pytest.raises(Unauthenticated),  # the stored hash is not a token
        ):
            hash_only.get_quote(INFY)
        with client(running.target, "ops") as unknown, pytest.raises(Unauthenticated):
            unknown.get_quote(INFY)
    finally:
        running.stop()
