"""The independent check (sarreg.verify) and the error estimate (sarreg.uncertainty)."""

from __future__ import annotations

import numpy as np
import pytest
from records import fit_of

from sarreg import io, preprocess
from sarreg.geometry import apply_matrix, similarity_about_centre
from sarreg.uncertainty import estimate_error, predicted_error, true_error
from sarreg.verify import Verdict, verify_registration

DATES = (
    "OPERA_L2_RTC-S1_T009-019294-IW2_20240123T084748Z_20240123T162136Z_S1A_30_v1.0_VH_cropped.tif",
    "OPERA_L2_RTC-S1_T009-019294-IW2_20240216T084747Z_20240216T160042Z_S1A_30_v1.0_VH_cropped.tif",
)


@pytest.fixture(scope="module")
def opera_rasters(data_dir):
    """Two real OPERA dates 24 days apart, pixel-aligned (true transform: identity), as read
    for a registration (``sarreg.io.Raster``, full resolution) with their normalized images."""
    out = []
    for name in DATES:
        r = io.read_raster(str(data_dir / "opera_rtc_s1" / name))
        out.append((r, preprocess.preprocess(r.data, r.mask, r.kind)[0]))
    return out


@pytest.fixture(scope="module")
def opera(opera_rasters):
    """The two OPERA dates as ``(normalized image, valid mask)``."""
    return [(img, r.mask) for r, img in opera_rasters]


def test_verification_accepts_the_right_transform(opera):
    (a, ma), (b, mb) = opera
    v = verify_registration(a, ma, b, mb, np.eye(3))
    assert v.verdict is Verdict.PASS
    assert v.windows_tried >= 8 and v.agree_fraction > 0.9
    assert v.median_px < 0.3


@pytest.mark.parametrize("shift", [3.0, 20.0])
def test_verification_rejects_a_shifted_transform(opera, shift):
    (a, ma), (b, mb) = opera
    m = np.array([[1.0, 0.0, shift], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    v = verify_registration(a, ma, b, mb, m)
    assert v.verdict is Verdict.FAIL
    assert v.windows_agree == 0 and v.median_px >= 2.5


def test_verification_rejects_rotated_content(opera):
    """The moving image rotated by 90 deg and registered as the identity."""
    (a, ma), _ = opera
    big = np.pad(a, ((0, 100), (0, 0)), mode="reflect")  # square, so rot90 keeps the grid
    mbig = np.pad(ma, ((0, 100), (0, 0)), mode="reflect")
    v = verify_registration(big, mbig, np.rot90(big).copy(), np.rot90(mbig).copy(), np.eye(3))
    assert v.verdict is not Verdict.PASS


def test_verification_measures_a_subpixel_residual(opera):
    (a, ma), (b, mb) = opera
    m = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, -0.3], [0.0, 0.0, 1.0]])
    v = verify_registration(a, ma, b, mb, m)
    assert v.verdict is Verdict.PASS
    dx = np.median([w["dx"] for w in v.windows if w["agree"]])
    dy = np.median([w["dy"] for w in v.windows if w["agree"]])
    assert dx == pytest.approx(-0.6, abs=0.1) and dy == pytest.approx(0.3, abs=0.1)


def _tie_points(n: int, sigma: float, seed: int, shape=(400, 400)):
    rng = np.random.default_rng(seed)
    m = similarity_about_centre(shape, 7.0, 1.1, (5.0, -3.0))
    src = rng.uniform(0, shape[1] - 1, (n, 2))
    dst = apply_matrix(m, src) + rng.normal(0, sigma, (n, 2))
    return src, dst, m


def test_predicted_error_grows_when_tie_points_are_removed():
    src, dst, _ = _tie_points(400, 1.0, 0)
    full = predicted_error("affine", src, dst, (400, 400)).rms_px
    few = predicted_error("affine", src[:40], dst[:40], (400, 400)).rms_px
    assert few > 2.0 * full  # about sqrt(10) times


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_predicted_error_matches_bootstrap_and_true_spread(model):
    """The covariance prediction equals the spread of refits on bootstrap samples and the
    true error over many noise draws."""
    from sarreg.geometry import fit_transform

    src, dst, _ = _tie_points(150, 1.0, 1)
    cov = predicted_error(model, src, dst, (400, 400), method="covariance").rms_px
    boot = predicted_error(model, src, dst, (400, 400), method="bootstrap", n_boot=200).rms_px
    assert boot == pytest.approx(cov, rel=0.25)
    errs = []
    for seed in range(40):
        s, d, m = _tie_points(150, 1.0, 100 + seed)
        fit = fit_transform(s, d, model=model, threshold=4.0, seed=seed)
        errs.append(true_error(fit.matrix, m, (400, 400)) ** 2)
    assert np.sqrt(np.mean(errs)) == pytest.approx(cov, rel=0.3)


def test_estimate_uses_the_measured_misalignment(opera):
    """A fit that is precise on its tie points but 0.8 px off on the images: the estimate
    reports the misalignment the check measures, not the tiny covariance."""
    (a, ma), (b, mb) = opera
    src, dst, _ = _tie_points(2000, 0.3, 2, shape=a.shape)
    m = np.array([[1.0, 0.0, 0.8], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # truth: identity
    v = verify_registration(a, ma, b, mb, m)
    base = predicted_error("affine", src, dst, a.shape).rms_px
    est = estimate_error("affine", src, dst, a.shape, m, v).rms_px
    assert base < 0.1
    assert est == pytest.approx(0.8, rel=0.5)


# --- single-look speckle: two independently speckled views of one real scene --------------

SIZE = 384


def _scene(data_dir, col: int, row: int) -> np.ndarray:
    """``(SIZE, SIZE)`` float32 power of a crop of the bundled Umbra sample, its own speckle
    smoothed away (Gaussian sigma 2 px, OpenCV)."""
    import cv2

    r = io.read_raster(str(data_dir / "umbra_mount_yasur.tif"))
    a = r.data[row : row + SIZE, col : col + SIZE].astype(np.float32) ** 2
    return cv2.GaussianBlur(a, (0, 0), 2.0)


def _single_look(clean: np.ndarray, valid: np.ndarray, seed: int):
    """``clean`` times independent single-look (exponential) speckle, preprocessed."""
    rng = np.random.default_rng(seed)
    noisy = clean * rng.exponential(1.0, clean.shape).astype(np.float32)
    img, _ = preprocess.preprocess(noisy, valid, "power")
    return img, valid


@pytest.fixture(scope="module")
def single_look(data_dir):
    """A reference and a moving image (the scene warped by a known similarity), each with its
    own single-look speckle; returns ``(ref, mask_ref, mov, mask_mov, truth, unrelated)``,
    ``truth`` moving -> reference pixel centres, ``unrelated`` another speckled scene."""
    import cv2

    clean = _scene(data_dir, 700, 700)
    truth = similarity_about_centre((SIZE, SIZE), 4.0, 1.05, (3.0, -2.0))
    inv = np.linalg.inv(truth)[:2]
    mov_clean = cv2.warpAffine(clean, inv, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
    mov_valid = cv2.warpAffine(np.ones((SIZE, SIZE), np.uint8), inv, (SIZE, SIZE),
                               flags=cv2.INTER_NEAREST).astype(bool)  # fmt: skip
    a, ma = _single_look(clean, np.ones((SIZE, SIZE), bool), 1)
    b, mb = _single_look(mov_clean, mov_valid, 2)
    other = _single_look(_scene(data_dir, 1300, 300), np.ones((SIZE, SIZE), bool), 3)
    return a, ma, b, mb, truth, other


def test_verification_accepts_a_correct_fit_on_single_look_speckle(single_look):
    """Two independently speckled single-look views hardly correlate pixel by pixel: the
    verdict on the unsmoothed windows refuses the right transform, the smoothed one accepts
    it, and its residuals stay small."""
    from sarreg.verify import VerifyConfig

    a, ma, b, mb, truth, _ = single_look
    v = verify_registration(a, ma, b, mb, truth)
    assert v.verdict is Verdict.PASS
    assert v.agree_fraction > 0.9 and v.median_px < 0.75
    unsmoothed = verify_registration(a, ma, b, mb, truth, VerifyConfig(verdict_sigma=0))
    assert unsmoothed.verdict is not Verdict.PASS


@pytest.mark.parametrize("case", ["shifted 5 px", "rotated 90 deg", "unrelated"])
def test_verification_rejects_wrong_results_on_single_look_speckle(single_look, case):
    a, ma, b, mb, truth, (c, mc) = single_look
    if case == "shifted 5 px":
        v = verify_registration(a, ma, b, mb, np.array([[1, 0, 5.0], [0, 1, 0], [0, 0, 1]]) @ truth)
    elif case == "rotated 90 deg":  # the right transform composed with a wrong hypothesis
        rot = np.array([[0.0, -1.0, SIZE - 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        v = verify_registration(a, ma, b, mb, truth @ rot)
    else:
        v = verify_registration(a, ma, c, mc, np.eye(3))
    assert v.verdict is Verdict.FAIL
    assert v.windows_agree <= 0.1 * v.windows_tried


def test_predicted_error_grows_where_tie_points_are_absent(single_look):
    """Tie points only around the centre, precise and consistent with a homography whose
    perspective is off: right at the centre, up to about 4 px wrong at the corners. The tie
    points' own spread sees nothing; the refit on the check's windows over the whole overlap
    predicts each corner's error within a factor of 2 (0.5..2.5 per corner)."""
    from sarreg.uncertainty import corner_points

    a, ma, b, mb, truth, _ = single_look
    c = (SIZE - 1) / 2.0
    about = np.array([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5e-5, 2.5e-5, 1.0]])
    fit = np.linalg.inv(about) @ tilt @ about @ truth
    rng = np.random.default_rng(0)
    src = rng.uniform(0.4 * SIZE, 0.6 * SIZE, (300, 2))
    dst = apply_matrix(fit, src) + rng.normal(0.0, 0.05, (300, 2))
    v = verify_registration(a, ma, b, mb, fit)
    assert v.verdict is Verdict.PASS  # within the check's tolerance over most of the overlap
    shape = (SIZE, SIZE)
    true = true_error(fit, truth, shape)
    pts = corner_points(shape)
    per_true = np.hypot(*(apply_matrix(fit, pts) - apply_matrix(truth, pts)).T)
    assert predicted_error("homography", src, dst, shape).rms_px < 0.2 * true
    est = estimate_error("homography", src, dst, shape, fit, v)
    assert 0.5 * true <= est.rms_px <= 2.0 * true
    ratio = np.array(est.points_px)[:4] / per_true[:4]
    assert np.all((ratio >= 0.5) & (ratio <= 2.5)), ratio


def test_a_corrected_fit_claims_no_less_than_its_windows_tell(single_look, monkeypatch):
    """A fit corrected by the windows (``corrected=True``) is claimed no better than
    CORRECTED_FLOOR x the windows' median residual anywhere, and the standard error of the
    windows' misalignment field counts CORRECTED_SE_FACTOR times (the windows' errors are
    correlated), which makes the corners, pinned down less than the centre, larger; with
    either left out the estimate would be smaller somewhere."""
    from sarreg import uncertainty
    from sarreg.verify import residual_shifts

    a, ma, b, mb, truth, _ = single_look
    rng = np.random.default_rng(0)
    src = rng.uniform(0, SIZE - 1, (300, 2))
    dst = apply_matrix(truth, src) + rng.normal(0.0, 0.3, (300, 2))
    v = verify_registration(a, ma, b, mb, truth)
    _, d, _ = residual_shifts(v)
    floor = uncertainty.CORRECTED_FLOOR * float(np.median(np.hypot(*d.T)))
    shape = (SIZE, SIZE)

    def corrected() -> np.ndarray:
        est = estimate_error("affine", src, dst, shape, truth, v, corrected=True)
        return np.array(est.points_px)

    est = corrected()
    assert np.all(est >= floor - 1e-9), (est, floor)
    assert est[:4].min() > est[4]  # the corners, pinned down less than the centre
    monkeypatch.setattr(uncertainty, "CORRECTED_FLOOR", 0.0)
    bare = corrected()
    assert bare.min() < floor, (bare, floor)  # the floor binds there (the centre)
    assert np.all(est >= bare - 1e-9)
    monkeypatch.undo()
    monkeypatch.setattr(uncertainty, "CORRECTED_SE_FACTOR", 1.0)
    plain = corrected()
    assert np.all(est >= plain - 1e-9)
    assert np.all(est[:4] > 1.1 * plain[:4]), (est, plain)  # measured 1.13-1.48x


def _shift(dx: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(("claimed", "kept"), [(-2.0, 0.0), (-5.0, 2.0)])
def test_a_correction_is_kept_only_when_its_own_check_passes(opera_rasters, claimed, kept):
    """A fit 2 px off in x, with a check whose windows all claim the moving content lies
    ``claimed`` px from where the fit puts it. Claimed -2 (the truth): the corrected fit is
    checked again, passes, and is kept (the identity). Claimed -5: the correction would
    leave the fit 3 px off; its check fails, so the fit stays as it was (2 px off), even
    though that check measures less misalignment (3 px) than was claimed (5 px)."""
    from sarreg.estimate import TiePoints
    from sarreg.verify import Verification, correct_by_windows

    (ref, img_ref), (mov, img_mov) = opera_rasters
    h, w = img_ref.shape
    wins = [{"x": x, "y": y, "dx": claimed, "dy": 0.0, "clear": True}
            for y in np.linspace(40, h - 40, 3) for x in np.linspace(40, w - 40, 3)]  # fmt: skip
    claim = Verification(Verdict.PASS, 9, 9, abs(claimed), abs(claimed), abs(claimed), 1.0, wins)
    xy = np.random.default_rng(0).uniform(20, min(h, w) - 20, (50, 2))
    tie = TiePoints(xy + [2.0, 0.0], xy, np.ones(50), np.ones(50), np.ones(50), np.full(50, -1))
    fit = fit_of(_shift(2.0), 50)
    new, ver, record = correct_by_windows(ref, mov, img_ref, img_mov, fit, tie, claim, (h, w))
    np.testing.assert_allclose(new.matrix, _shift(kept), atol=0.3)
    assert record.before_px == pytest.approx(abs(claimed), abs=0.05)
    if kept == 0.0:
        assert record.applied and ver.verdict is Verdict.PASS and ver is not claim
        assert new.rmse == pytest.approx(2.0, abs=0.3)  # the tie points were 2 px off
    else:
        assert not record.applied and new is fit and ver is claim
