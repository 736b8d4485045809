"""The check's small helpers on synthetic arrays: shrinking a finer moving image before the
warp (size, composed matrix, inverse map) and the masked Gaussian smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from sarreg.verify import _shrink_finer_moving, _smooth


def _scale(s: float) -> np.ndarray:
    """Moving px -> reference px for a moving image ``1 / s`` times finer (plus a shift)."""
    return np.array([[s, 0.0, 3.0], [0.0, s, -2.0], [0.0, 0.0, 1.0]])


def test_a_moving_image_twice_as_fine_is_shrunk_to_the_reference_pixel():
    rng = np.random.default_rng(0)
    img = rng.random((64, 80)).astype(np.float32)
    mask = np.ones(img.shape, bool)
    mask[:, :8] = False
    matrix = _scale(0.5)
    inv = np.linalg.inv(matrix)

    def inverse(xy):
        return xy @ inv[:2, :2].T + inv[:2, 2]

    small, msk, m2, inv2 = _shrink_finer_moving(img, mask, matrix, inverse)
    assert small.shape == (32, 40) and msk.shape == (32, 40)
    assert not msk[:, :4].any() and msk[:, 4:].all()
    # a shrunk pixel centre and the full-resolution pixels it averages map to one reference px
    sx, sy = 10.0, 7.0  # shrunk pixel (10, 7) covers moving pixels x 20..21, y 14..15
    full = np.array([20.5, 14.5, 1.0])
    np.testing.assert_allclose(m2 @ [sx, sy, 1.0], matrix @ full, atol=1e-9)
    # the composed inverse maps reference px to shrunk px, the inverse of the new matrix
    ref = np.array([[5.0, 4.0], [17.25, 9.5], [30.0, 20.0]])
    back = np.linalg.inv(m2)
    np.testing.assert_allclose(inv2(ref), ref @ back[:2, :2].T + back[:2, 2], atol=1e-9)


@pytest.mark.parametrize("s", [0.8, 1.0, 2.0])
def test_a_moving_image_not_much_finer_is_kept(s):
    img = np.zeros((40, 40), np.float32)
    matrix = _scale(s)
    out = _shrink_finer_moving(img, None, matrix, None)
    assert out[0] is img and out[2] is matrix


def test_a_singular_matrix_leaves_the_moving_image_as_is():
    img = np.zeros((40, 40), np.float32)
    matrix = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    assert _shrink_finer_moving(img, None, matrix, None)[0] is img


def test_masked_smoothing_is_a_normalized_convolution():
    """Invalid pixels neither darken nor brighten: a constant stays constant on the valid
    pixels however the mask is shaped; a bright invalid pixel leaks nowhere."""
    rng = np.random.default_rng(1)
    valid = rng.random((48, 48)) > 0.3
    img = np.full((48, 48), 5.0, np.float32)
    img[~valid] = 1000.0
    out = _smooth(img, valid, 2.0)
    np.testing.assert_allclose(out[valid], 5.0, rtol=1e-5)
    # and it smooths: a step between two halves is blurred over a few pixels
    step = np.where(np.arange(48)[None, :] < 24, 0.0, 1.0).repeat(48, 0).astype(np.float32)
    sm = _smooth(step, np.ones_like(valid), 2.0)
    assert 0.2 < sm[10, 23] < 0.5 and 0.5 < sm[10, 24] < 0.8
    np.testing.assert_allclose(sm[:, :10], 0.0, atol=1e-3)


@pytest.mark.parametrize("flat", ["ref", "mov"])
def test_featureless_windows_are_not_tried(flat):
    """A window with no texture in either image cannot tell a shift: it is skipped, so a pair
    with one featureless side is inconclusive (0 windows tried), never a verdict."""
    from sarreg.verify import Verdict, verify_registration

    rng = np.random.default_rng(2)
    textured = rng.random((160, 160)).astype(np.float32)
    blank = np.full((160, 160), 0.5, np.float32)
    ref, mov = (blank, textured) if flat == "ref" else (textured, blank)
    v = verify_registration(ref, None, mov, None, np.eye(3))
    assert v.verdict is Verdict.INCONCLUSIVE and v.windows_tried == 0
    # the textured image against itself: windows tried and agreeing
    same = verify_registration(textured, None, textured, None, np.eye(3))
    assert same.verdict is Verdict.PASS and same.windows_tried > 0


@pytest.mark.parametrize(
    ("lo", "hi", "size"), [(0, 500, 500), (0, 300, 500), (120, 500, 500), (40, 260, 300)]
)
def test_check_areas_stay_inside_the_image_and_reach_both_ends_of_the_overlap(lo, hi, size):
    """Search areas of side win + 2m (64 + 12 px) along one axis: inside the image, their
    windows starting at the overlap's start (or the image's), the last one ending at the
    overlap's end (or the image's), at most 8, at least half a window apart."""
    from sarreg.verify import _grid_origins

    win, m = 64, 6
    o = _grid_origins(lo, hi, size, win, m, 8)
    assert o.min() >= 0 and o.max() + win + 2 * m <= size
    assert o[0] == max(0, lo - m)
    assert o[-1] + win + m == hi or o[-1] + win + 2 * m == size
    assert 1 <= len(o) <= 8 and np.all(np.diff(o) >= win // 2)


@pytest.mark.parametrize(
    ("oy", "ox", "margin"),
    [(6, 6, False), (9, 4, False), (0, 6, True), (12, 6, True), (6, 0, True), (6, 12, True),
     (11, 1, False), (8, 6, False)],
)  # fmt: skip
def test_a_window_found_on_the_edge_of_its_search_area_is_flagged(oy, ox, margin):
    """A 32 px template cut at (ox, oy) from a 44 px area (search margin m = 6): found there,
    offset (ox - 6, oy - 6), and on the margin exactly when it touches the area's edge."""
    from sarreg.verify import _locate

    area = np.random.default_rng(1).normal(size=(44, 44)).astype(np.float32)
    tmpl = area[oy : oy + 32, ox : ox + 32].copy()
    dx, dy, ncc, on_margin = _locate(area, tmpl, 6)
    assert on_margin is margin and ncc == pytest.approx(1.0, abs=1e-4)
    if not margin:
        assert (dx, dy) == pytest.approx((ox - 6, oy - 6), abs=0.02)


@pytest.mark.parametrize("model", ["poly2", "tps"])
def test_inverse_maps_interpolate_a_smooth_mapping_within_a_32nd_of_a_pixel(model):
    """The check's remap maps of a non-linear mapping, interpolated between nodes 16 px apart,
    agree with the mapping's inverse evaluated at every pixel; a point without a position
    (beyond the fold) is outside (-1)."""
    from sarreg.mapping import fit_mapping
    from sarreg.verify import inverse_maps

    rng = np.random.default_rng(5)
    xy_mov = rng.uniform(0, 300, (400, 2))
    bend = 0.02 * np.sin(xy_mov[:, :1] / 60.0) * 60.0  # a smooth, non-affine warp
    xy_ref = xy_mov @ np.array([[0.98, 0.05], [-0.04, 1.01]]).T + [7.5, -3.25] + bend
    mapping = fit_mapping(xy_mov, xy_ref, model).mapping
    shape = (230, 310)
    mx, my = inverse_maps(mapping.inverse, shape)
    assert mx.shape == my.shape == shape and mx.dtype == np.float32
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    dense = mapping.inverse(np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64))
    ok = np.isfinite(dense).all(axis=1)
    assert ok.mean() > 0.9
    err = np.hypot(mx.ravel()[ok] - dense[ok, 0], my.ravel()[ok] - dense[ok, 1])
    # measured max 0.007 / 0.024 px, median 0.005 / 0.006 px (poly2 / tps)
    assert err.max() < 1 / 32 and np.median(err) < 0.01

    def nowhere(xy):  # a mapping with no position on the left half
        out = np.asarray(xy, dtype=np.float64).copy()
        out[out[:, 0] < 100] = np.nan
        return out

    mx, my = inverse_maps(nowhere, shape)
    assert (mx[:, :80] == -1).all() and (my[:, :80] == -1).all()
    np.testing.assert_allclose(mx[:, 120:], xx[:, 120:], atol=1e-4)
