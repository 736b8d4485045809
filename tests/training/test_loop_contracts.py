"""What a user of `sarreg train` relies on: best.pt is the best validation, the learning-rate
schedule is what the optimizer steps with, and a resumed run is the uninterrupted one."""

from __future__ import annotations

import csv

import pytest
import torch

import sarreg.training.loop as loop
from sarreg.model.checkpoint import load_checkpoint
from sarreg.training.loop import lr_factor, train


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def scripted_validation(monkeypatch):
    """Run the real validation, but report the MMA@3 values given (one per validation), and
    keep a copy of the weights validated each time: the loop's choice of best.pt is then known
    in advance whatever the tiny network learns."""
    calls: list[dict] = []
    values: list[float] = []
    real = loop.evaluate_pairs

    def evaluate(net, *args, **kwargs):
        res = real(net, *args, **kwargs)
        mma = values[len(calls)]
        res.mma = {t: mma for t in res.mma}
        calls.append({"mma3": mma, "weights": _weights(net)})
        return res

    monkeypatch.setattr(loop, "evaluate_pairs", evaluate)
    return values, calls


def _with_validation(tiny_config, data_dir, **kw):
    return tiny_config(
        **{
            "val.sources": [str(data_dir / "s1_vv_grd_db.tif")],
            "val.pairs": 1,
            "val.crop": 64,
            "val.every": 1,
            "val.max_keypoints": 200,
            **kw,
        }
    )


def test_best_checkpoint_holds_the_best_validation_not_the_last(
    tiny_config, data_dir, scripted_validation
):
    values, calls = scripted_validation
    values += [0.2, 0.5, 0.3]
    res = train(_with_validation(tiny_config, data_dir, steps=3), progress=False)
    assert len(calls) == 3
    assert res.best_mma == pytest.approx(0.5)
    best = load_checkpoint(res.best)
    last = load_checkpoint(res.last)
    assert best.meta["val"]["step"] == 2 and best.meta["val"]["mma3"] == pytest.approx(0.5)
    assert _same(_weights(best.net), calls[1]["weights"])  # the weights validated at step 2
    assert not _same(_weights(best.net), _weights(last.net))
    assert last.training["best"] == {"mma3": pytest.approx(0.5), "step": 2}


def test_best_checkpoint_survives_a_resume_with_worse_validations(
    tiny_config, data_dir, scripted_validation
):
    values, calls = scripted_validation
    values += [0.2, 0.5, 0.4, 0.1]
    first = train(_with_validation(tiny_config, data_dir, steps=2), progress=False)
    best_before = _weights(load_checkpoint(first.best).net)
    second = train(_with_validation(tiny_config, data_dir, steps=4), resume=first.last,
                   progress=False)  # fmt: skip
    assert len(calls) == 4
    assert second.best_mma == pytest.approx(0.5)
    best = load_checkpoint(second.best)
    assert best.meta["val"]["step"] == 2
    assert _same(_weights(best.net), best_before)


def test_learning_rate_schedule_reaches_the_optimizer(tiny_config):
    """The optimizer steps with lr * lr_factor(step) at every step (warm-up, then cosine)."""
    cfg = tiny_config(steps=4, optim={"lr": 2e-3, "warmup_steps": 2, "schedule": "cosine",
                                      "min_lr_ratio": 0.1})  # fmt: skip
    seen: list[float] = []

    def hook(optimizer, args, kwargs):
        seen.append(float(optimizer.param_groups[0]["lr"]))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        train(cfg, progress=False)
    finally:
        handle.remove()
    expected = [2e-3 * lr_factor(s, 4, cfg.optim) for s in range(4)]
    assert len(set(expected)) >= 3  # warm-up, plateau, cosine decay
    assert seen == pytest.approx(expected, rel=1e-9)
    with open(f"{cfg.out}/log.csv") as f:
        logged = [float(r["lr"]) for r in csv.DictReader(f)]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_resumed_run_equals_the_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    """A four-step run stopped by Ctrl-C after step 2 and resumed from its last.pt ends with
    the same weights, optimizer state and losses as four steps in one go (same batches, same
    sampling, same schedule)."""
    straight = train(tiny_config(steps=4, out=str(tmp_path / "straight")), progress=False)

    real = loop.train_forward
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # Ctrl-C as step 3 starts
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    cfg = tiny_config(steps=4, out=str(tmp_path / "resumed"), checkpoint_every=10)
    monkeypatch.setattr(loop, "train_forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(loop, "train_forward", real)
    saved = tmp_path / "resumed" / "last.pt"
    assert load_checkpoint(saved).training["step"] == 2  # saved on Ctrl-C
    resumed = train(cfg, resume=saved, progress=False)

    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert a.training["step"] == b.training["step"] == 4
    wa, wb = _weights(a.net), _weights(b.net)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)
    sa, sb = a.training["optimizer"]["state"], b.training["optimizer"]["state"]
    for i in sa:
        torch.testing.assert_close(sb[i]["exp_avg"], sa[i]["exp_avg"], rtol=0, atol=1e-6)
    logs = []
    for run in ("straight", "resumed"):
        with open(tmp_path / run / "log.csv") as f:
            logs.append([(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)])
    assert [s for s, _ in logs[1]] == [1, 2, 3, 4]
    assert [v for _, v in logs[1]] == pytest.approx([v for _, v in logs[0]], rel=1e-5)
