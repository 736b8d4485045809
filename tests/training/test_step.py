"""Forward pass + objective: a few optimisation steps on a fixed real batch lower the loss."""

from __future__ import annotations

import numpy as np
import torch

from sarreg.model.r2d2 import R2D2Net
from sarreg.preprocess import PreprocessConfig
from sarreg.training.data import PairGenerator, load_source
from sarreg.training.losses import LossConfig
from sarreg.training.sampler import SamplerConfig
from sarreg.training.step import compute_losses, train_forward
from sarreg.training.synth import SynthConfig


def test_few_steps_on_a_fixed_batch_lower_the_loss(tiny_config):
    cfg = tiny_config()
    torch.manual_seed(0)
    src = load_source(cfg.data.sources[0], 64, SynthConfig(looks=(4.0, 4.0)))
    gen = PairGenerator([src], 64, SynthConfig(looks=(4.0, 4.0)), PreprocessConfig())
    batch = gen.batch(2, np.random.default_rng(0))
    net = R2D2Net("fast_r2d2", mchan=1, dim=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    lc = LossConfig()
    sc = SamplerConfig(border=8, query_step=8, neg_step=8)

    def loss_value():
        out = train_forward(net, batch.image1, batch.image2)
        total, parts = compute_losses(out, batch, lc, sc, torch.Generator().manual_seed(0))
        return total, parts

    with torch.no_grad():
        before, parts = loss_value()
    assert all(torch.isfinite(v) for v in parts.values())
    assert parts["queries"] > 20
    for _ in range(12):
        total, _ = loss_value()
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        after, _ = loss_value()
    assert float(after) < float(before) - 0.01


def test_heads_equal_the_networks_forward():
    torch.manual_seed(0)
    net = R2D2Net("fast_r2d2", mchan=1, dim=16).eval()
    x1, x2 = torch.rand(1, 1, 48, 40), torch.rand(1, 1, 48, 40)
    with torch.no_grad():
        out = train_forward(net, x1, x2)
        ref = net(torch.cat([x1, x2]))
    assert torch.allclose(out.rep2, ref["repeatability"][1:], atol=1e-5)
    assert torch.allclose(out.rel1, ref["reliability"][:1], atol=1e-5)


def test_reliability_gets_no_gradient_during_warmup(tiny_config):
    cfg = tiny_config()
    src = load_source(cfg.data.sources[0], 64, SynthConfig())
    batch = PairGenerator([src], 64, SynthConfig(), PreprocessConfig()).batch(
        2, np.random.default_rng(1)
    )
    sc = SamplerConfig(border=8, query_step=8, neg_step=8)
    grads = {}
    for train_rel in (False, True):
        torch.manual_seed(0)
        net = R2D2Net("fast_r2d2", mchan=1, dim=16)
        out = train_forward(net, batch.image1, batch.image2)
        lc = LossConfig(w_cosim=0.0, w_peaky=0.0, w_ap_plain=1.0)
        total, _ = compute_losses(
            out, batch, lc, sc, torch.Generator(), train_reliability=train_rel
        )
        total.backward()
        grads[train_rel] = net.reliability_head.weight.grad
    assert grads[False] is None or float(grads[False].abs().sum()) == 0.0
    assert float(grads[True].abs().sum()) > 0.0
