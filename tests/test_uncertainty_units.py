"""Unit laws of the error estimate (sarreg.uncertainty) on synthetic tie points and windows.

No images: the verification windows are written out as :class:`sarreg.verify.Verification`
records (window centres and residual shifts, checked reference pixels), so each figure has a
value known in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from sarreg.uncertainty import (
    CORRECTED_SE_FACTOR,
    ErrorEstimate,
    ErrorTerms,
    _alignment_field,
    _window_refit,
    corner_points,
    estimate_error,
    predicted_error,
)
from sarreg.verify import Verdict, Verification


def _verification(xy, d, scale: float = 1.0) -> Verification:
    """A passed check whose windows (all with a clear peak) sit at ``xy`` ``(K, 2)`` with
    residual shifts ``d`` ``(K, 2)`` (checked pixels, ``scale`` full-resolution px each)."""
    wins = [
        {"x": float(x), "y": float(y), "dx": float(a), "dy": float(b), "clear": True}
        for (x, y), (a, b) in zip(np.asarray(xy, float), np.asarray(d, float), strict=True)
    ]
    return Verification(Verdict.PASS, len(wins), len(wins), 0.0, 0.0, 0.0, scale, wins)


SQUARE = [[100.0, 100.0], [300.0, 100.0], [300.0, 300.0], [100.0, 300.0]]


def test_corner_points_are_the_pixel_centres_of_the_corners_and_the_centre():
    assert corner_points((6, 9)).tolist() == [[0, 0], [8, 0], [8, 5], [0, 5], [4, 2.5]]


def test_report_gives_the_error_to_a_ten_thousandth_of_a_pixel_and_in_map_units():
    est = ErrorEstimate(0.123456, 0.2, (0.1, 0.1, 0.1, 0.1, 0.123456), "covariance", 40, 10.0)
    out = est.to_dict()
    assert out["rms_px"] == 0.1235
    assert ErrorEstimate(0.1, 0.123456, (0.1,) * 5, "covariance", 4).to_dict()["max_px"] == 0.1235
    assert out["points_px"][4] == 0.1235
    assert out["rms_map_units"] == 1.2346
    assert out["max_map_units"] == 2.0
    assert est.rms_map == pytest.approx(1.23456)
    assert "rms_map_units" not in ErrorEstimate(0.1, 0.1, (0.1,) * 5, "covariance", 4).to_dict()


@pytest.mark.parametrize(("model", "n"), [("translation", 1), ("similarity", 2), ("affine", 3)])
def test_error_of_an_exactly_determined_fit_is_a_number(model, n):
    """As many equations as parameters leave no residual to scale the covariance with: the
    estimate is still a finite figure (a report cannot hold a division by zero)."""
    src = np.array([[10.0, 20.0], [200.0, 40.0], [60.0, 180.0]])[:n]
    est = predicted_error(model, src, src + [3.0, -2.0], (256, 256))
    assert np.isfinite(est.rms_px) and est.rms_px < 1e-6


def test_alignment_field_needs_three_clear_windows():
    pts = np.array([[0.0, 0.0], [400.0, 400.0]])
    assert _alignment_field(_verification(SQUARE[:2], [[1.0, 0.0]] * 2), pts) is None
    field, se = _alignment_field(_verification(SQUARE[:3], [[1.0, 0.0]] * 3), pts)
    assert field == pytest.approx([1.0, 1.0]) and se == pytest.approx([0.0, 0.0], abs=1e-9)


def test_alignment_field_has_the_standard_error_of_its_windows():
    """Three windows shifted by 1, 0 and 2 px in x: the translation field is their mean, 1 px,
    with a standard error of sqrt(trace(sigma^2 (A^T A)^-1)) = sqrt(2 * 0.5 / 3) px, where
    sigma^2 = 2 / (6 - 2) from the residuals."""
    ver = _verification(SQUARE[:3], [[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    field, se = _alignment_field(ver, np.array([[0.0, 0.0], [50.0, 400.0]]))
    assert field == pytest.approx([1.0, 1.0])
    assert se == pytest.approx([np.sqrt(1 / 3)] * 2)


def test_alignment_field_follows_a_linear_misalignment():
    """Nine windows (an affine field) whose x shift grows by 0.01 px per px from x = 200: the
    field is 2 px at both image sides and 0 on the middle column, at any height."""
    xy = np.array([[x, y] for y in (100.0, 200.0, 300.0) for x in (100.0, 200.0, 300.0)])
    d = np.c_[0.01 * (xy[:, 0] - 200.0), np.zeros(9)]
    pts = np.array([[0.0, 0.0], [400.0, 50.0], [200.0, 350.0], [200.0, 5.0]])
    field, se = _alignment_field(_verification(xy, d), pts)
    assert field == pytest.approx([2.0, 2.0, 0.0, 0.0], abs=1e-9)
    assert se == pytest.approx([0.0] * 4, abs=1e-6)


def test_alignment_field_is_in_full_resolution_pixels():
    """Shifts of 0.5 checked pixels on a check at half resolution (scale 2) are 1 px."""
    ver = _verification(SQUARE, [[0.3, 0.4]] * 4, scale=2.0)
    field, _ = _alignment_field(ver, np.array([[0.0, 0.0], [600.0, 600.0]]))
    assert field == pytest.approx([1.0, 1.0])


def test_window_refit_needs_the_windows_its_model_needs():
    ver = _verification(SQUARE[:3], [[0.5, 0.0]] * 3)
    assert _window_refit("translation", np.eye(3), ver, (400, 400)) is None
    assert _window_refit("translation", np.eye(3), None, (400, 400)) is None


def test_window_refit_of_a_homography_needs_twelve_windows():
    xy = np.array([[x, y] for y in (50.0, 150.0, 250.0) for x in (50.0, 150.0, 250.0, 350.0)])
    ver = _verification(xy, [[0.5, 0.0]] * 12)
    out = _window_refit("homography", np.eye(3), ver, (400, 400))
    assert out == pytest.approx([0.5] * 5, abs=1e-6)
    assert _window_refit("homography", np.eye(3), _verification(xy[:11], [[0.5, 0.0]] * 11),
                         (400, 400)) is None  # fmt: skip


def test_window_refit_is_in_full_resolution_pixels():
    """Shifts of 0.25 checked pixels on a check at half resolution: 0.5 px everywhere."""
    ver = _verification(np.array(SQUARE) / 2, [[0.25, 0.0]] * 4, scale=2.0)
    out = _window_refit("translation", np.eye(3), ver, (400, 400))
    assert out == pytest.approx([0.5] * 5)


def test_window_refit_tells_how_far_the_fit_is_from_the_windows():
    """Four windows that all see the moving content 0.5 px right of where the fit puts it:
    the translation refitted on them is 0.5 px from the fit everywhere, with no spread."""
    ver = _verification(SQUARE, [[0.5, 0.0]] * 4)
    out = _window_refit("translation", np.eye(3), ver, (400, 400))
    assert out == pytest.approx([0.5] * 5)


def test_window_refit_adds_the_bootstrap_spread_of_the_windows():
    """Residual shifts (3, -1, -1, -1) px: the windows' refit is the fit itself (mean 0), and
    the spread of a translation refit on bootstrap samples of the four windows is the
    standard error of their mean, sqrt(mean(d^2) / 4) = sqrt(3) / 2 px, at every point."""
    ver = _verification(SQUARE, [[3.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0], [0.0, 0.0, 1.0]])
    out = _window_refit("translation", shift, ver, (400, 400), n_boot=4000)
    assert out is not None
    assert out**2 == pytest.approx([0.75] * 5, abs=0.08)


@pytest.mark.parametrize(("corrected", "se_factor"), [(False, 1.0), (True, 1.5)])
def test_estimate_adds_the_fields_standard_error_to_the_misalignment(corrected, se_factor):
    """Exact tie points (no fit error of their own) and the three windows above: per point,
    the error is sqrt(field^2 + (k se)^2) = sqrt(1 + k^2 / 3) px, k = 1 for a plain fit and
    CORRECTED_SE_FACTOR (1.5) for a fit corrected by the windows, whose correlated errors
    pin the field down less than their spread says; the method says whether the fit was
    corrected (not by default)."""
    ver = _verification(SQUARE[:3], [[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    xy = np.array(SQUARE + [[200.0, 200.0]])
    kwargs = {"corrected": True} if corrected else {}
    est = estimate_error("translation", xy, xy, (400, 400), np.eye(3), ver, **kwargs)
    assert est.points_px == pytest.approx([np.sqrt(1 + se_factor**2 / 3)] * 5)
    assert est.method == ("covariance+corrected by verification" if corrected
                          else "covariance+verification")  # fmt: skip


#: terms each of which is largest at one point: fit at the top-left corner, field at the
#: top-right, its standard error at the bottom-right, the refit at the bottom-left; the floor
#: (0.5) above all of them at the centre
TERMS = {
    "fit": (3.0, 0.0, 0.0, 0.0, 0.1),
    "field": (0.0, 2.0, 0.0, 0.0, 0.0),
    "field_se": (0.0, 0.0, 2.0, 0.0, 0.0),
    "floor": 0.5,
    "refit": (0.0, 0.0, 0.0, 4.0, 0.0),
}


@pytest.mark.parametrize(
    ("corrected", "se_factor", "expected"),
    [
        (False, None, [3.0, 2.0, 2.0, 4.0, 0.1]),  # plain: the fit counts, the floor does not
        (True, None, [0.5, 2.0, 2.0 * CORRECTED_SE_FACTOR, 4.0, 0.5]),  # corrected: the reverse
        (True, 2.0, [0.5, 2.0, 4.0, 4.0, 0.5]),
        (False, 0.5, [3.0, 2.0, 1.0, 4.0, 0.1]),
    ],
)
def test_terms_combine_as_the_largest_of_fit_field_floor_and_refit(corrected, se_factor, expected):
    """Per point: sqrt(max(fit^2, field^2 + (k se)^2, refit^2)) for a plain fit,
    sqrt(max(field^2 + (k se)^2, floor^2, refit^2)) for one corrected by the windows (whose
    error no longer follows the tie points' covariance); k = 1 or CORRECTED_SE_FACTOR unless
    given."""
    terms = ErrorTerms(**TERMS, corrected=corrected)
    assert terms.combine(se_factor) == pytest.approx(expected)


def test_terms_without_a_window_refit_combine_the_others():
    terms = ErrorTerms(**{**TERMS, "refit": None}, corrected=True)
    assert terms.combine()[3] == pytest.approx(0.5)


@pytest.mark.parametrize("corrected", [False, True])
def test_estimate_keeps_the_terms_that_give_it_and_the_report_round_trips_them(corrected):
    """The estimate is its terms combined, and the report's ``terms`` (to a ten-thousandth of
    a pixel) give the same figure back."""
    ver = _verification(SQUARE[:3] + [[200.0, 120.0]], [[1.0, 0.0], [0.0, 0.3], [2.0, 0.0],
                                                        [0.5, -0.5]])  # fmt: skip
    xy = np.array(SQUARE + [[200.0, 200.0]])
    est = estimate_error("translation", xy, xy + 0.01 * np.arange(10).reshape(5, 2),
                         (400, 400), np.eye(3), ver, corrected=corrected)  # fmt: skip
    assert est.terms.corrected is corrected and est.terms.refit is not None
    assert est.terms.combine() == pytest.approx(est.points_px)
    assert (est.terms.floor > 0) is corrected
    out = est.to_dict()["terms"]
    assert out["se_factor"] == (CORRECTED_SE_FACTOR if corrected else 1.0)
    back = ErrorTerms.from_dict(out)
    assert back.combine() == pytest.approx(est.points_px, abs=2e-4)
    assert back.fit == pytest.approx(est.terms.fit, abs=1e-4)


def test_estimate_without_windows_has_no_terms():
    xy = np.array(SQUARE + [[200.0, 200.0]])
    est = estimate_error("translation", xy, xy + np.array([[0.1, 0.0]] * 4 + [[0.0, 0.0]]),
                         (400, 400), np.eye(3))  # fmt: skip
    assert est.terms is None and "terms" not in est.to_dict()
