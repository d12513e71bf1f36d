"""The committed configs: one per row of tables A3, A5, A6 and preset, in sync with the presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from uvlm.model.names import parse_name
from uvlm.suites.presets import TABLES, config_path, write_configs
from uvlm.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_committed_configs_match_the_presets(tmp_path):
    fresh = write_configs(tmp_path)
    # configs/accelerate holds launcher settings, not run configs
    committed = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml")
                       if p.relative_to(ROOT / "configs").parts[0] != "accelerate")
    assert committed == sorted(p.relative_to(tmp_path) for p in fresh)
    for p in fresh:
        assert (ROOT / "configs" / p.relative_to(tmp_path)).read_text() == p.read_text(), p


@pytest.mark.parametrize("preset", ["cpu", "cpu2", "paper"])
@pytest.mark.parametrize("table", list(TABLES))
def test_every_row_config_loads(preset, table):
    for name in TABLES[table]:
        cfg = load_config(config_path(ROOT / "configs", preset, name, table))
        assert parse_name(cfg.model.name).name == name
        bias = cfg.data.train.get("bias")
        assert bias == {"default": None, "weather-biased": "weather", "battery-biased": "battery"}[table]
        assert cfg.data.test.get("bias") is None
