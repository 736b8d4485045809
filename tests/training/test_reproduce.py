"""The shipped model's recipe (training/reproduce.py): stop_at, the plan, a smoke run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sarreg.errors import ConfigError
from sarreg.training.config import load_config
from sarreg.training.loop import lr_factor, train

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "training" / "reproduce.py"


def test_stop_at_stops_early_on_the_full_schedule(tiny_config):
    cfg = tiny_config(steps=6, stop_at=2)
    result = train(cfg, progress=False)
    assert result.step == 2
    with open(Path(cfg.out) / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    # the learning rate follows the 6-step schedule, not a 2-step one
    expected = cfg.optim.lr * lr_factor(1, 6, cfg.optim)
    assert float(rows[-1]["lr"]) == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(cfg.optim.lr * lr_factor(1, 2, cfg.optim))
    with pytest.raises(ConfigError, match="stop_at"):
        load_config(None, {"steps": 3, "stop_at": 4})


def test_dry_run_prints_the_model_cards_segments(tmp_path):
    out = subprocess.run(
        [sys.executable, str(RECIPE), "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    trains = [x for x in lines if x.startswith("sarreg train")]
    assert len(trains) == 4
    assert "--steps 2000" in trains[0] and "stop_at=500" in trains[0]
    assert f"--init {tmp_path / '1_scratch' / 'last.pt'}" in trains[1]
    assert f"--init {tmp_path / '2_continue' / 'best.pt'}" in trains[2]
    assert "--steps 3000 --lr 0.0001" in trains[3] and "synth.looks=[1,4]" in trains[3]
    assert any("fit_whitening.py" in x for x in lines)
    assert not any(tmp_path.iterdir())  # ran nothing


def test_smoke_recipe_writes_a_packaged_model_and_its_card(tmp_path):
    from sarreg.model.checkpoint import load_checkpoint

    out = tmp_path / "rep"
    run = subprocess.run(
        [sys.executable, str(RECIPE), "--smoke", "--out", str(out), "--threads", "2"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    ck = load_checkpoint(out / "fast_r2d2_sar.pt")
    assert ck.training is None and ck.net.whitening.active
    assert "Apache-2.0" in ck.meta["license"] and "1_scratch" in ck.meta["training_history"]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["steps"] for s in summary["segments"]] == [1, 1, 1, 1]
    card = (out / "model_card_table.md").read_text()
    assert "## Reproduced model" in card and "## Shipped model" in card and "MMA@3" in card
    assert "| total |" in card
    assert (out / "4_looks14_3k" / "config.yaml").exists()
