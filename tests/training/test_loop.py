"""Training loop: checkpoints, resume, NaN handling, and `sarreg train --config smoke`."""

from __future__ import annotations

import csv

import pytest
import torch

import sarreg.training.loop as loop
from sarreg.cli import main
from sarreg.errors import CheckpointError, TrainingError
from sarreg.model.checkpoint import load_checkpoint
from sarreg.training.loop import lr_factor, start_state, train


def _adam_steps(training_state) -> set[int]:
    return {int(s["step"]) for s in training_state["optimizer"]["state"].values()}


def test_resume_continues_from_the_same_step_and_optimizer_state(tiny_config):
    cfg = tiny_config(steps=2)
    first = train(cfg, progress=False)
    assert first.step == 2
    ck = load_checkpoint(first.last)
    assert ck.training["step"] == 2 and _adam_steps(ck.training) == {2}
    saved_avg = ck.training["optimizer"]["state"][0]["exp_avg"].clone()

    net, state = start_state(cfg, first.last, None)
    assert state["step"] == 2
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], saved_avg)

    more = tiny_config(steps=3)
    second = train(more, resume=first.last, progress=False)
    assert second.step == 3
    ck3 = load_checkpoint(second.last)
    # AdamW's own step counter went on from 2: the optimizer state was restored
    assert ck3.training["step"] == 3 and _adam_steps(ck3.training) == {3}
    with open(first.last.parent / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1, 2, 3]


def test_resume_with_another_architecture_is_a_checkpoint_error(tiny_config):
    first = train(tiny_config(steps=1), progress=False)
    wider = tiny_config(steps=3, model={"arch": "fast_r2d2", "mchan": 2, "dim": 16})
    with pytest.raises(CheckpointError, match="mchan=1.*mchan=2"):
        train(wider, resume=first.last, progress=False)
    best_only = first.last.parent / "weights_only.pt"
    from sarreg.model.checkpoint import save_checkpoint

    save_checkpoint(best_only, load_checkpoint(first.last).net)
    with pytest.raises(CheckpointError, match="no training state"):
        train(tiny_config(steps=3), resume=best_only, progress=False)


def test_training_leaves_the_callers_thread_counts(tiny_config):
    """train() runs on cfg.threads torch threads and one OpenCV thread, then gives the caller
    back its own counts (a library user's, or the next test's)."""
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    cfg = tiny_config(steps=1)
    assert cfg.threads != before[0] or before[1] != 1  # train() changes at least one of them
    train(cfg, progress=False)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_init_starts_from_given_weights(tiny_config):
    first = train(tiny_config(steps=1), progress=False)
    net, state = start_state(tiny_config(), None, first.last)
    ref = load_checkpoint(first.last).net
    assert state is None
    for (k, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_non_finite_loss_stops_with_training_error(tiny_config, monkeypatch):
    real = loop.compute_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        total, parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            parts = dict(parts, peaky=parts["peaky"] * float("nan"))
            total = total * float("nan")
        return total, parts

    monkeypatch.setattr(loop, "compute_losses", poisoned)
    cfg = tiny_config(steps=5)
    with pytest.raises(TrainingError) as err:
        train(cfg, progress=False)
    msg = str(err.value)
    assert "peaky" in msg and "step 3" in msg and "last.pt" in msg
    ck = load_checkpoint(f"{cfg.out}/last.pt")  # the last good state is kept
    assert ck.training["step"] == 2


def test_lr_schedules():
    from sarreg.training.config import OptimConfig

    cos = OptimConfig(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, 100, cos) == pytest.approx(0.1)
    assert lr_factor(10, 100, cos) == pytest.approx(1.0)
    assert lr_factor(99, 100, cos) == pytest.approx(0.1, abs=0.01)
    step = OptimConfig(schedule="step", warmup_steps=0, step_size=10, gamma=0.5)
    assert lr_factor(25, 100, step) == pytest.approx(0.25)


def test_sarreg_train_smoke_end_to_end(tmp_path, capsys):
    out = tmp_path / "smoke"
    code = main(["train", "--config", "smoke", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    ck = load_checkpoint(out / "last.pt")
    assert ck.arch == "fast_r2d2" and ck.training["step"] == 4
    assert ck.preprocess is not None and ck.meta["name"] == "smoke"
    assert ck.net.whitening.active  # fitted on training pairs before each validation
    best = load_checkpoint(out / "best.pt")
    assert "val" in best.meta and best.training is None
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.isfinite(ck.net(x)["descriptors"]).all()
    with open(out / "val.csv") as f:
        rows = list(csv.DictReader(f))
    # a validation every 2 steps; MMA grows with the pixel threshold; best.pt holds the
    # validation with the highest MMA@3 (the first one on a tie)
    assert [int(r["step"]) for r in rows] == [2, 4]
    for r in rows:
        assert float(r["mma1"]) <= float(r["mma3"]) <= float(r["mma5"])
        assert 0 < float(r["matches"]) <= float(r["keypoints"])
    top = max(rows, key=lambda r: float(r["mma3"]))
    assert best.meta["val"]["step"] == int(top["step"])
    assert best.meta["val"]["mma3"] == pytest.approx(float(top["mma3"]), abs=1e-6)


def test_sarreg_train_reports_config_errors(tmp_path, capsys):
    code = main(["train", "--config", "smoke", "--out", str(tmp_path), "--set", "optim.lrr=1"])
    assert code == 12
    err = capsys.readouterr().err
    assert err.startswith("sarreg: error: unknown config key") and "weight_decay" in err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 15


def test_train_help_has_an_example(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "sarreg train --config smoke" in text and "--resume" in text
