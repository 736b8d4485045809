"""Fixtures for the training tests: tiny configs on the bundled real samples."""

from __future__ import annotations

import pytest

from sarreg.training.config import load_config


@pytest.fixture()
def tiny_config(data_dir, tmp_path):
    """A few-step config on the Umbra sample (crop 64, narrow net), output in tmp_path."""

    def make(**overrides):
        values = {
            "steps": 2,
            "batch_size": 2,
            "checkpoint_every": 1,
            "log_every": 1,
            "threads": 2,
            "device": "cpu",
            "out": str(tmp_path / "run"),
            "model": {"arch": "fast_r2d2", "mchan": 1, "dim": 16},
            "data.crop": 64,
            "data.sources": [
                {"path": str(data_dir / "umbra_mount_yasur.tif"), "display_as": "amplitude"}
            ],
            "sampler": {"border": 8, "query_step": 8, "neg_step": 8},
            "optim": {"lr": 1e-3, "warmup_steps": 0},
            "val.sources": [],
            "val.pairs": 0,
        }
        values.update(overrides)
        return load_config(None, values)

    return make
