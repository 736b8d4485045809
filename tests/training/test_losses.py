"""R2D2 losses: quantized AP against exact AP, repeatability and peakiness behaviour."""

from __future__ import annotations

import torch

from sarreg.training.losses import (
    ap_reliability_loss,
    cosim_loss,
    exact_ap,
    peaky_loss,
    quantized_ap,
    soft_histogram,
)


def _hand_made():
    # 3 queries, 6 candidates; several positives per row, distinct scores
    scores = torch.tensor(
        [
            [0.95, 0.80, 0.62, 0.40, 0.33, 0.10],
            [0.31, 0.90, 0.71, 0.55, 0.12, 0.05],
            [0.20, 0.85, 0.47, 0.66, 0.91, 0.02],
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor(
        [
            [1, 0, 1, 0, 0, 1],
            [1, 0, 0, 1, 0, 0],
            [0, 1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    return scores, labels


def test_exact_ap_reference_on_known_rankings():
    scores, labels = _hand_made()
    ap = exact_ap(scores, labels)
    # row 0: positives at ranks 1, 3, 6 -> (1/1 + 2/3 + 3/6) / 3
    assert abs(ap[0] - (1 + 2 / 3 + 0.5) / 3) < 1e-12
    # row 1: ranks 4 and 3 -> (1/3 + 2/4) / 2
    assert abs(ap[1] - (1 / 3 + 2 / 4) / 2) < 1e-12
    # row 2: rank 2 -> 1/2
    assert abs(ap[2] - 0.5) < 1e-12


def test_quantized_ap_matches_exact_ap_with_fine_bins():
    scores, labels = _hand_made()
    exact = exact_ap(scores, labels)
    fine = quantized_ap(scores, labels, nq=1001)
    assert torch.allclose(fine, exact, atol=2e-3)
    coarse = quantized_ap(scores, labels, nq=5)
    assert not torch.allclose(coarse, exact, atol=2e-3)  # the test can fail


def test_quantized_ap_is_exact_on_bin_centres_and_respects_weights():
    # bin centres of nq=11 on [0, 1] are multiples of 0.1
    scores = torch.tensor([[0.9, 0.7, 0.5, 0.3]], dtype=torch.float64)
    labels = torch.tensor([[False, True, False, True]])
    ap = quantized_ap(scores, labels, nq=11)
    assert torch.allclose(ap, exact_ap(scores, labels), atol=1e-6)
    # ignoring the top negative makes the first positive rank 1
    w = torch.tensor([[0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    ap_w = quantized_ap(scores, labels, w, nq=11)
    assert abs(float(ap_w) - (1.0 + 2.0 / 3.0) / 2.0) < 1e-6


def test_soft_histogram_conserves_mass_and_is_differentiable():
    s = torch.rand(4, 50, dtype=torch.float64, requires_grad=True)
    h = soft_histogram(s * 1.4 - 0.2, torch.ones(4, 50, dtype=torch.float64), nq=20)
    assert torch.allclose(h.sum(1), torch.full((4,), 50.0, dtype=torch.float64))
    scores = torch.tensor([[0.5, 0.52, 0.3]], requires_grad=True)
    labels = torch.tensor([[True, False, False]])
    ap = quantized_ap(scores, labels, nq=20)
    ap.sum().backward()
    assert scores.grad[0, 0] > 0  # raising the positive raises AP
    assert scores.grad[0, 1] < 0  # raising the top negative lowers it


def test_ap_reliability_loss():
    ap = torch.tensor([1.0, 0.2])
    assert torch.allclose(
        ap_reliability_loss(ap, torch.tensor([1.0, 1.0])), torch.tensor([0.0, 0.8])
    )
    # an unreliable query costs kappa-related constant 1 - kappa
    assert torch.allclose(
        ap_reliability_loss(ap, torch.tensor([0.0, 0.0]), 0.5), torch.tensor([0.5, 0.5])
    )


def _identity_field(b, h, w):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs, ys], -1).float()[None].expand(b, -1, -1, -1).contiguous()


def test_cosim_loss_zero_for_aligned_maps_and_positive_for_shifted():
    torch.manual_seed(0)
    rep = torch.rand(2, 1, 64, 64)
    field = _identity_field(2, 64, 64)
    valid = torch.ones(2, 64, 64, dtype=torch.bool)
    assert float(cosim_loss(rep, rep, field, valid)) < 1e-5
    other = torch.rand(2, 1, 64, 64)
    assert float(cosim_loss(rep, other, field, valid)) > 0.05
    # a shifted map with the matching shifted field agrees again
    shifted = torch.roll(rep, shifts=(3, 5), dims=(2, 3))
    f2 = field.clone()
    f2[..., 0] += 5
    f2[..., 1] += 3
    v2 = valid.clone()
    v2[:, -3:] = False
    v2[:, :, -5:] = False
    assert float(cosim_loss(rep, shifted, f2, v2)) < 1e-3


def test_peaky_loss_prefers_peaks():
    flat = torch.full((1, 1, 64, 64), 0.5)
    peaks = torch.zeros(1, 1, 64, 64)
    peaks[..., 8::16, 8::16] = 1.0
    assert float(peaky_loss(flat)) > 0.99
    assert float(peaky_loss(peaks)) < float(peaky_loss(flat)) - 0.5
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[:, :32] = True
    assert float(peaky_loss(peaks, mask, stride=8)) < 0.5
