"""Training configuration: presets load, unknown keys and bad values are ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarreg.cli import main
from sarreg.errors import ConfigError
from sarreg.training.config import (
    check_data_paths,
    config_path,
    load_config,
    parse_override,
    preset_names,
)

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "sarreg" / "configs"


def test_presets_load_and_resolve_paths_against_their_folder():
    cfg = load_config("fast_r2d2_sar")
    assert cfg.model.arch == "fast_r2d2" and cfg.model.mchan == 2
    assert all(Path(s.path).is_absolute() for s in cfg.data.sources)
    assert cfg.data.sources[0].path == str(
        (PRESETS / "../../../shared/data/train/s1_vh_tiles").resolve()
    )
    assert len(cfg.val.sources) == 7
    assert cfg.val.synth.looks == (1.0, 4.0) and cfg.val.synth.rotation_deg == 15.0
    assert cfg.val.synth.display_prob == 0.0  # unset keys keep the validation defaults
    smoke = load_config("smoke")
    assert smoke.steps <= 10 and Path(smoke.out).is_absolute()
    assert smoke.data.sources[0].path == str(REPO / "data" / "umbra_mount_yasur.tif")
    assert config_path("smoke") == (PRESETS / "smoke.yaml").resolve()
    assert {"smoke", "fast_r2d2_sar"} <= set(preset_names())
    # the repository's configs/ links to the packaged presets and resolves the same way
    assert load_config(REPO / "configs" / "smoke.yaml") == smoke


def test_relative_paths_of_a_config_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "cfg"
    folder.mkdir(parents=True)
    p = folder / "mine.yaml"
    p.write_text(
        "name: mine\nout: ../runs/mine\ndata:\n  sources: [tiles/a.tif]\n"
        "val:\n  sources: [../held/b.tif]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(p)
    assert cfg.data.sources[0].path == str(folder / "tiles" / "a.tif")
    assert cfg.val.sources[0].path == str(tmp_path / "project" / "held" / "b.tif")
    assert cfg.out == str(tmp_path / "project" / "runs" / "mine")
    # no out: runs/NAME under the working directory; a relative --out too
    assert load_config("smoke").out == str(elsewhere / "runs" / "smoke")
    assert load_config("smoke", {"out": "x/y"}).out == str(elsewhere / "x" / "y")


def test_missing_preset_data_asks_for_data(tmp_path, monkeypatch):
    p = tmp_path / "preset.yaml"
    p.write_text("name: p\ndata:\n  sources: [gone/tiles]\nval:\n  sources: [gone/v.tif]\n")
    cfg = load_config(p)
    with pytest.raises(ConfigError) as err:
        check_data_paths(cfg, data_given=False, val_given=False)
    assert "not found" in str(err.value) and "--data" in err.value.hint
    given = load_config(p, {"data.sources": [str(tmp_path)]})
    assert check_data_paths(given, data_given=True, val_given=False).val.sources == ()
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(p), "--no-progress"]) == 12


def test_list_configs_prints_the_presets(capsys):
    assert main(["train", "--list-configs"]) == 0
    text = capsys.readouterr().out
    assert "smoke" in text and "fast_r2d2_sar" in text


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
