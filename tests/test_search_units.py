"""Small laws of the orientation and scale search's resampling (sarreg.search): descriptions,
pixel-centre matrices, enlargement and the masks of rotated images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_cdt

from sarreg.geometry import apply_matrix
from sarreg.search import ROTATION_MARGIN, Hypothesis, _spectrum, resize, upsample_factor


def test_only_the_plain_hypothesis_is_the_identity():
    assert Hypothesis().is_identity and Hypothesis(0, False, 1.0, "fourier-mellin").is_identity
    for hyp in (Hypothesis(scale=2.0), Hypothesis(scale=0.5), Hypothesis(90), Hypothesis(0, True)):
        assert not hyp.is_identity


@pytest.mark.parametrize(
    ("hyp", "text"),
    [
        (Hypothesis(), "as is"),
        (Hypothesis(90, True, 0.5), "mirrored, rotated 90 deg, scaled x0.5"),
        (Hypothesis(0, True, 2.0), "mirrored, scaled x2"),
        (Hypothesis(270), "rotated 270 deg"),
    ],
)
def test_a_hypothesis_says_what_it_does_in_order(hyp, text):
    assert hyp.describe() == text


def test_resize_maps_pixel_centres_by_their_edges():
    """Halving 40 x 64 px: the centre of the 2 x 2 block at (0..1, 0..1), (0.5, 0.5), is new
    pixel centre (0, 0); old pixel centre (0, 0) is (-0.25, -0.25)."""
    img, msk = np.zeros((40, 64), np.float32), np.ones((40, 64), bool)
    out, out_msk, m = resize(img, msk, 0.5, 1)
    assert out.shape == out_msk.shape == (20, 32)
    pts = apply_matrix(m, np.array([[0.5, 0.5], [0.0, 0.0], [63.5, 39.5]]))
    assert pts.tolist() == [[0.0, 0.0], [-0.25, -0.25], [31.5, 19.5]]


@pytest.mark.parametrize(
    ("hyp", "shape_ref", "shape_mov", "up"),
    [
        (Hypothesis(scale=0.25), (512, 512), (128, 128), 2.0),  # both meet at 128 px: x2
        (Hypothesis(scale=0.5), (400, 400), (300, 300), 1.28),  # 200 px: 256 / 200
        (Hypothesis(scale=4.0), (128, 128), (2048, 2048), 2.0),  # capped at MAX_UPSAMPLE
        (Hypothesis(scale=2.0), (600, 600), (1200, 1200), 1.0),  # large enough
        (Hypothesis(90), (64, 64), (64, 64), 1.0),  # no scale, no enlargement
    ],
)
def test_small_scale_hypotheses_are_enlarged_to_the_extraction_side(hyp, shape_ref, shape_mov, up):
    assert upsample_factor(hyp, shape_ref, shape_mov) == pytest.approx(up)


def test_the_identity_is_still_enlarged_when_asked():
    img = np.arange(32 * 48, dtype=np.float32).reshape(32, 48)
    out, msk, m = Hypothesis().apply(img, np.ones(img.shape, bool), upsample=2.0)
    assert out.shape == msk.shape == (64, 96)
    assert apply_matrix(m, np.array([[0.0, 0.0]])).tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize("angle", [30.0, 120.0, 210.0, 300.0])
def test_a_rotation_keeps_the_whole_image_and_masks_the_uncovered_corners(angle):
    """Rotated by an angle that is not a right one, the moving image lies inside the output
    with its outermost pixel edges on the output's edges; every pixel kept by the mask is
    more than ROTATION_MARGIN px (chessboard) from any pixel the rotation uncovers, and
    every such pixel is kept."""
    h, w = 60, 90
    hyp = Hypothesis(angle)
    m, (oh, ow) = hyp.matrix((h, w))
    edges = apply_matrix(m, np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5],
                                      [-0.5, h - 0.5]]))  # fmt: skip
    np.testing.assert_allclose(edges.min(axis=0), [-0.5, -0.5], atol=1e-9)
    np.testing.assert_allclose(edges.max(axis=0), [ow - 0.5, oh - 0.5], atol=0.5)
    _, msk, m_apply = hyp.apply(np.ones((h, w), np.float32), np.ones((h, w), bool))
    np.testing.assert_allclose(m_apply, m)
    yy, xx = np.mgrid[0:oh, 0:ow]
    src = apply_matrix(np.linalg.inv(m), np.c_[xx.ravel(), yy.ravel()].astype(float))
    covered = ((src >= -0.5) & (src <= [w - 0.5, h - 0.5])).all(axis=1).reshape(oh, ow)
    dist = distance_transform_cdt(covered, metric="chessboard")
    assert msk.any() and (dist[msk] > ROTATION_MARGIN).all()
    assert msk[dist > ROTATION_MARGIN].all()


def test_a_portrait_images_spectrum_is_the_transpose_of_its_landscape_one():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(60, 120)).astype(np.float32)
    wide, f = _spectrum(img, np.ones(img.shape, bool), 64)
    tall, g = _spectrum(img.T.copy(), np.ones(img.T.shape, bool), 64)
    assert wide.shape == tall.shape == (64, 64) and f == g
    np.testing.assert_allclose(
        np.fft.ifftshift(tall), np.fft.ifftshift(wide).T, rtol=1e-5, atol=1e-6
    )


def test_masked_pixels_do_not_reach_the_spectrum():
    """Two images that differ only where they are masked (nodata, uncovered corners) have
    the same Fourier magnitude: masked pixels are filled and zeroed before the transform."""
    rng = np.random.default_rng(2)
    img = rng.normal(size=(128, 160)).astype(np.float32)
    mask = np.ones(img.shape, bool)
    mask[:40, :50] = False
    other = img.copy()
    other[:40, :50] = 100.0 * rng.normal(size=(40, 50))
    a, _ = _spectrum(img, mask, 64)
    b, _ = _spectrum(other, mask, 64)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_mirrored_hypotheses_come_right_after_the_plain_right_angles_when_expected():
    """flips_first: rotated 90, 180, 270, then the mirrored image (as is, then rotated), then
    the rest of the plain hypotheses; without it the mirrored ones come last."""
    from sarreg.search import hypotheses

    first = hypotheses(flips=True, flips_first=True)
    assert [(h.rotation_deg, h.flip) for h in first[:5]] == [
        (90, False), (180, False), (270, False), (0, True), (90, True)
    ]  # fmt: skip
    last = hypotheses(flips=True)
    assert not any(h.flip for h in last[:20]) and last[-1].flip
    assert sorted(map(repr, first)) == sorted(map(repr, last))  # the same set, reordered
