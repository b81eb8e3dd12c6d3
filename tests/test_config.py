"""Configuration: configs/dev.yaml loads, the keys tools rely on are where they belong,
and every mistake stops start-up with a ConfigError naming the dotted key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from execgw.server.config import ConfigError, GatewayConfig, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
DEV_YAML = REPO / "configs" / "dev.yaml"


def dev_data() -> dict[str, Any]:
    data = yaml.safe_load(DEV_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def names_key(message: str, key: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message) is not None


def test_dev_yaml_loads_with_its_values() -> None:
    config = load_config(DEV_YAML)
    assert isinstance(config, GatewayConfig)
    assert config.mode == "paper"
    assert config.listen == "127.0.0.1:50051"
    # Relative to configs/, where the file is: the repository's var/, from any folder.
    assert (
        Path(config.journal.path).resolve() == DEV_YAML.resolve().parent.parent / "var/journal.db"
    )
    assert config.market_data.source == "synthetic"
    assert config.market_data.synthetic.seed == 42
    assert config.market_data.synthetic.symbols["NSE:INFY"] == 1500.0
    assert config.instruments.csv is None
    assert config.instruments.default_tick_size == 0.05
    assert config.instruments.default_lot_size == 1
    assert config.execution.dry_run is False
    assert config.execution.slippage_bps == 5.0
    breakers = config.execution.circuit_breakers
    assert breakers.max_daily_loss_rupees == 5000.0
    assert breakers.max_daily_drawdown_pct == 0.02
    assert breakers.max_trades_per_day == 100
    assert breakers.max_trades_per_strategy_per_day == 50
    assert breakers.max_loss_streak == 5


@pytest.mark.parametrize(
    "dotted",
    [
        "mode",
        "listen",
        "journal.path",
        "market_data.source",
        "execution.dry_run",
        "execution.slippage_bps",
        "execution.circuit_breakers.max_daily_loss_rupees",
        "execution.circuit_breakers.max_daily_drawdown_pct",
        "execution.circuit_breakers.max_trades_per_day",
        "execution.circuit_breakers.max_trades_per_strategy_per_day",
        "execution.circuit_breakers.max_loss_streak",
    ],
)
def test_dev_yaml_has_the_documented_key(dotted: str) -> None:
    node: Any = dev_data()
    for part in dotted.split("."):
        assert isinstance(node, dict), f"configs/dev.yaml: {dotted} is not under a mapping"
        assert part in node, f"configs/dev.yaml lacks {dotted}"
        node = node[part]
    assert node is not None


def test_empty_file_means_the_embedded_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path) == GatewayConfig()


def test_overrides_revalidate(tmp_path: Path) -> None:
    config = load_config(DEV_YAML).with_overrides(listen="0.0.0.0:6000")
    assert config.listen == "0.0.0.0:6000"
    assert config.execution.slippage_bps == 5.0
    with pytest.raises(ConfigError) as info:
        config.with_overrides(listen="no-port")
    assert names_key(str(info.value), "listen")


def _with(path: str, value: Any) -> dict[str, Any]:
    """dev.yaml with the value at a dotted path replaced (or added)."""
    data = dev_data()
    node = data
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("execution.slipage_bps", 5.0),  # misspelt: must not be silently ignored
        ("execution.circuit_breakers.max_daily_loss", 1000.0),
        ("journal.fsync", True),
        ("colour", "blue"),
    ],
)
def test_unknown_key_is_a_config_error_naming_it(dotted: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(dotted, value), source="dev.yaml")
    message = str(info.value)
    assert names_key(message, dotted), message
    assert "unknown key" in message


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("execution.slippage_bps", "five"),
        ("execution.dry_run", "no"),
        ("execution.circuit_breakers.max_trades_per_day", "100"),  # strict: no coercion
        ("execution.circuit_breakers.max_trades_per_day", 100.5),
        ("execution.circuit_breakers.max_loss_streak", True),
        ("journal.path", 7),
        ("mode", "backtest"),
        ("market_data.source", "zerodha"),
        ("listen", "localhost"),
    ],
)
def test_wrong_type_is_a_config_error_naming_the_key(dotted: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(dotted, value), source="dev.yaml")
    assert names_key(str(info.value), dotted), str(info.value)


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("execution.slippage_bps", -1.0),
        ("execution.slippage_bps", 1_000.5),
        ("execution.circuit_breakers.max_daily_loss_rupees", 0.0),
        ("execution.circuit_breakers.max_daily_drawdown_pct", 1.5),
        ("execution.circuit_breakers.max_daily_drawdown_pct", 0.0),
        ("execution.circuit_breakers.max_trades_per_day", 0),
        ("execution.circuit_breakers.max_trades_per_strategy_per_day", -5),
        ("execution.circuit_breakers.max_loss_streak", 0),
        ("instruments.default_tick_size", 0.0),
        ("listen", "127.0.0.1:70000"),
    ],
)
def test_out_of_range_value_is_a_config_error_naming_the_key(dotted: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(dotted, value), source="dev.yaml")
    assert names_key(str(info.value), dotted), str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    data = _with("execution.slippage_bps", -1.0)
    data["execution"]["circuit_breakers"]["max_loss_streak"] = 0
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="dev.yaml")
    message = str(info.value)
    assert names_key(message, "execution.slippage_bps"), message
    assert names_key(message, "execution.circuit_breakers.max_loss_streak"), message


def test_load_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        DEV_YAML.read_text(encoding="utf-8").replace("max_loss_streak: 5", "max_loss_streek: 5"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert names_key(message, "execution.circuit_breakers.max_loss_streek"), message


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("execution: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_an_unbracketed_ipv6_listen_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="brackets"):
        parse_config({"listen": "::1:5005"}, source="test")
    assert parse_config({"listen": "[::1]:5005"}, source="test").listen == "[::1]:5005"
