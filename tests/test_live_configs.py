"""The live configs shipped in configs/: configs/kite-demo.yaml (what `make kite-demo`
runs) and configs/live.example.yaml (the starting point, with every broker.kite key)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from execgw.server.config import KiteBrokerConfig, load_config

REPO = Path(__file__).resolve().parent.parent
KITE_DEMO = REPO / "configs" / "kite-demo.yaml"
LIVE_EXAMPLE = REPO / "configs" / "live.example.yaml"


def raw(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_kite_demo_is_live_against_the_local_stand_in() -> None:
    config = load_config(KITE_DEMO)
    assert config.mode == "live"
    assert config.execution.dry_run is False
    kite = config.broker.kite
    assert kite.root == "http://127.0.0.1:8765"
    assert kite.postback_listen == "127.0.0.1:8766"
    assert config.market_data.source == "synthetic"
    assert Path(config.journal.path) == REPO / "var" / "kite-demo.db"


def test_the_demo_launcher_starts_the_journal_the_config_names_afresh() -> None:
    spec = importlib.util.spec_from_file_location("kite_demo", REPO / "tools" / "kite_demo.py")
    assert spec is not None
    assert spec.loader is not None
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    assert Path(load_config(KITE_DEMO).journal.path) == launcher.JOURNAL
    assert launcher.CONFIG == KITE_DEMO


def test_live_example_parses_as_a_dry_run() -> None:
    config = load_config(LIVE_EXAMPLE)
    assert config.mode == "live"
    # Copied as it is, it cannot trade: a dry run until someone turns it off.
    assert config.execution.dry_run is True
    assert config.execution.dry_run_fills == "none"
    assert config.broker.kite == KiteBrokerConfig()


def test_live_example_names_every_broker_kite_key() -> None:
    kite = raw(LIVE_EXAMPLE)["broker"]["kite"]
    assert set(kite) == set(KiteBrokerConfig.model_fields)
    text = LIVE_EXAMPLE.read_text(encoding="utf-8")
    for name in ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "KITE_API_SECRET"):
        assert name in text
