"""Where a training step's time goes: pair synthesis (CPU) against the network and loss.

Times ``--steps`` steps of a preset (default ``fast_r2d2_sar``) on this machine, split into
the batch synthesis (always on the CPU, in the training process with ``data.workers: 0``) and
the forward, loss and backward pass (on ``--device``), plus one whitening fit and one
validation. The split is what the model card's wall-time estimate for a GPU rests on: there
the network part shrinks, the synthesis does not (unless ``data.workers`` > 0).

    python training/bench_step.py --steps 20
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fast_r2d2_sar")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()

    import numpy as np
    import torch

    from sarreg.model.r2d2 import R2D2Net
    from sarreg.training import whiten
    from sarreg.training.config import load_config
    from sarreg.training.data import PairGenerator
    from sarreg.training.loop import load_data
    from sarreg.training.step import compute_losses, train_forward
    from sarreg.training.validate import evaluate_pairs

    torch.set_num_threads(opts.threads)
    cfg = load_config(opts.config)
    device = torch.device(opts.device)
    train_sources, val_pairs, _ = load_data(cfg)
    gen = PairGenerator(train_sources, cfg.data.crop, cfg.synth, cfg.preprocess)
    m = cfg.model
    net = R2D2Net(m.arch, in_channels=1, mchan=m.mchan, dim=m.dim, relu22=m.relu22).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr)
    rng = np.random.default_rng(0)
    sampler_gen = torch.Generator().manual_seed(0)
    synth_t, net_t = [], []
    for _ in range(opts.steps):
        t0 = time.perf_counter()
        batch = gen.batch(cfg.batch_size, rng).to(device)
        t1 = time.perf_counter()
        out = train_forward(net, batch.image1, batch.image2)
        total, _ = compute_losses(out, batch, cfg.loss, cfg.sampler, sampler_gen)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        synth_t.append(t1 - t0)
        net_t.append(time.perf_counter() - t1)
    skip = min(2, opts.steps - 1)  # warm-up steps
    s, n = float(np.mean(synth_t[skip:])), float(np.mean(net_t[skip:]))
    net.eval()
    t0 = time.perf_counter()
    whiten.refit(net, whiten.whitening_pairs(train_sources, cfg), cfg)
    t_whiten = time.perf_counter() - t0
    t0 = time.perf_counter()
    if val_pairs:
        evaluate_pairs(net, val_pairs, cfg.val.max_keypoints, list(cfg.val.thresholds))
    t_val = time.perf_counter() - t0
    print(f"\n{opts.config}: batch {cfg.batch_size} x {cfg.data.crop} px, {opts.device}, "
          f"{opts.threads} threads, {opts.steps - skip} timed steps\n")  # fmt: skip
    print("| part | seconds |")
    print("|---|---|")
    print(f"| pair synthesis per step | {s:.3f} |")
    print(f"| forward + loss + backward per step | {n:.3f} |")
    print(f"| step | {s + n:.3f} |")
    print(f"| whitening fit ({cfg.whiten.pairs} pairs) | {t_whiten:.1f} |")
    print(f"| validation ({len(val_pairs)} pairs) | {t_val:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
