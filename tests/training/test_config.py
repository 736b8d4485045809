"""Training configuration: presets load, unknown keys and bad values are ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarreg.errors import ConfigError
from sarreg.training.config import (
    CONFIG_DIR,
    REPO_ROOT,
    config_path,
    load_config,
    parse_override,
)


def test_presets_load_and_resolve_paths_against_the_repo():
    cfg = load_config("fast_r2d2_sar")
    assert cfg.model.arch == "fast_r2d2" and cfg.model.mchan == 2
    assert all(Path(s.path).is_absolute() for s in cfg.data.sources)
    assert cfg.data.sources[0].path == str(
        (REPO_ROOT / "../shared/data/train/s1_vh_tiles").resolve()
    )
    assert len(cfg.val.sources) == 7
    assert cfg.val.synth.looks == (1.0, 4.0) and cfg.val.synth.rotation_deg == 15.0
    assert cfg.val.synth.display_prob == 0.0  # unset keys keep the validation defaults
    smoke = load_config("smoke")
    assert smoke.steps <= 10 and Path(smoke.out).is_absolute()
    assert config_path("smoke") == CONFIG_DIR / "smoke.yaml"


def test_unknown_key_lists_the_valid_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  learning_rate: 0.01\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "learning_rate" in msg and "lr" in msg and "weight_decay" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, {"batchsize": 3})


def test_bad_values_and_names():
    with pytest.raises(ConfigError, match="steps"):
        load_config(None, {"steps": "many"})
    with pytest.raises(ConfigError, match="schedule"):
        load_config(None, {"optim.schedule": "linear"})
    with pytest.raises(ConfigError, match="device"):
        load_config(None, {"device": "tpu"})
    with pytest.raises(ConfigError, match="smoke"):
        config_path("no_such_preset")


def test_overrides_win_over_the_file():
    cfg = load_config("smoke", {"steps": 7, "optim.lr": "3e-4", "loss.kappa": 0.6})
    assert cfg.steps == 7 and cfg.optim.lr == pytest.approx(3e-4) and cfg.loss.kappa == 0.6
    assert parse_override("sampler.neg_step=4") == ("sampler.neg_step", 4)
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")
