"""Sampler: descriptors as the network computes them, positives where the ground truth says."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarreg.model.r2d2 import R2D2Net
from sarreg.training.sampler import (
    SamplerConfig,
    disc_offsets,
    grid_xy,
    sample_ap,
    sample_descriptors,
)


def test_sampled_descriptors_equal_forward_descriptors():
    torch.manual_seed(0)
    net = R2D2Net("fast_r2d2", mchan=1, dim=32).eval()
    x = torch.rand(2, 1, 40, 52)
    with torch.no_grad():
        dense = net(x)["descriptors"]
        low = net.low_res_features(x)
    xy = torch.tensor([[0, 0], [51, 39], [10, 7], [25, 33], [1, 38]], dtype=torch.float32)
    d = sample_descriptors(low, xy[None].expand(2, -1, -1), (40, 52))
    ref = dense[:, :, xy[:, 1].long(), xy[:, 0].long()].transpose(1, 2)
    assert torch.allclose(d, ref, atol=1e-5)


def test_grid_and_offsets():
    g = grid_xy((64, 48), 8, 16, (3, 1))
    assert g[:, 0].min() == 19 and g[:, 1].min() == 17
    assert g[:, 0].max() < 48 - 16 and g[:, 1].max() < 64 - 16
    off = disc_offsets(3)
    assert off.shape == (29, 2) and torch.all(off[0] == 0)
    assert torch.all((off**2).sum(1) <= 9)


def _shifted_features(shift=(5, 3), h=64, w=64, d=16):
    """Full-resolution random features for image 1 and the same shifted by ``shift`` for 2."""
    torch.manual_seed(1)
    low1 = torch.randn(1, d, h, w)
    low2 = torch.roll(low1, shifts=(shift[1], shift[0]), dims=(2, 3))
    return low1, low2


def _field(h, w, dx, dy):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs + dx, ys + dy], -1).float()[None]


def test_positives_are_found_where_the_ground_truth_says():
    h = w = 64
    low1, low2 = _shifted_features((5, 3), h, w)
    rel = torch.full((1, 1, h, w), 0.7)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    mask2 = torch.ones(1, h, w, dtype=torch.bool)
    cfg = SamplerConfig(border=8, query_step=8, pos_radius=3, neg_radius=7, neg_step=4)
    g = torch.Generator().manual_seed(0)
    # exact ground truth: the positive is the GT point itself, similarity 1
    s = sample_ap(low1, low2, rel, _field(h, w, 5, 3), valid, mask2, (h, w), cfg, g)
    inside = (s.gt_xy[:, 0] <= w - 1) & (s.gt_xy[:, 1] <= h - 1)
    assert inside.sum() > 10
    assert torch.allclose(s.positive_xy[inside], s.query_xy[inside] + torch.tensor([5.0, 3.0]))
    assert torch.allclose(s.scores[inside, 0], torch.ones(int(inside.sum())), atol=1e-5)
    # a ground truth 2 px off: the search within pos_radius still finds the true point
    s2 = sample_ap(low1, low2, rel, _field(h, w, 7, 3), valid, mask2, (h, w), cfg, g)
    ok = (s2.query_xy[:, 0] + 7 <= w - 1 - 3) & (s2.query_xy[:, 1] + 3 <= h - 1)
    assert ok.sum() > 10
    assert torch.allclose(s2.positive_xy[ok], s2.query_xy[ok] + torch.tensor([5.0, 3.0]))
    # reliability is read at the queries
    assert torch.allclose(s.reliability, torch.full_like(s.reliability, 0.7))


def test_negatives_near_the_ground_truth_are_ignored():
    h = w = 64
    low1, low2 = _shifted_features((0, 0), h, w)
    low1 = torch.cat([low1, low1])
    low2 = torch.cat([low2, low2])
    rel = torch.ones(2, 1, h, w)
    field = _field(h, w, 0, 0).expand(2, -1, -1, -1)
    valid = torch.ones(2, h, w, dtype=torch.bool)
    cfg = SamplerConfig(border=8, query_step=8, neg_step=4, neg_radius=7)
    s = sample_ap(low1, low2, rel, field, valid, valid, (h, w), cfg, torch.Generator())
    n_neg = s.scores.shape[1] - 1
    per_image = n_neg // 2
    neg = s.weights[:, 1:]
    # the query's own image has ignored negatives, the other image of the batch has none
    own = torch.where(s.batch_index[:, None] == 0, neg[:, :per_image], neg[:, per_image:])
    other = torch.where(s.batch_index[:, None] == 0, neg[:, per_image:], neg[:, :per_image])
    assert (own == 0).any(dim=1).all()
    assert (other == 1).all()
    # no ignored negative is farther than neg_radius, and high-similarity ones are ignored
    assert (s.scores[:, 1:][neg == 1] < 0.999).all()


def test_projection_applies_to_queries_positives_and_negatives():
    h = w = 64
    low1, low2 = _shifted_features((5, 3), h, w)
    rel = torch.ones(1, 1, h, w)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    cfg = SamplerConfig(border=8, query_step=8, neg_step=8)
    args = (low1, low2, rel, _field(h, w, 5, 3), valid, valid, (h, w), cfg)
    plain = sample_ap(*args, torch.Generator().manual_seed(0))
    same = sample_ap(*args, torch.Generator().manual_seed(0), project=lambda d: d)
    assert torch.equal(plain.scores, same.scores)
    assert plain.scores[:, 1:].max() < 0.9  # random features: negatives are dissimilar
    # a projection onto one direction makes every descriptor alike
    const = sample_ap(
        *args,
        torch.Generator().manual_seed(0),
        project=lambda d: F.normalize(torch.ones_like(d), dim=-1),
    )
    torch.testing.assert_close(const.scores, torch.ones_like(const.scores))
