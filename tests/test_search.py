"""The orientation and scale search at any angle: Fourier-Mellin proposals, rotations by
angles other than multiples of 90 deg, on the bundled Umbra sample (plain images, no
georeferencing)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from sarreg import search
from sarreg.cli import main
from sarreg.config import EstimateConfig
from sarreg.geometry import apply_matrix, mapping_rmse, similarity_about_centre
from sarreg.pipeline import RegisterConfig, register

UMBRA = "umbra_mount_yasur.tif"
#: moving pixel centre -> mirrored moving pixel centre of a 384 px wide image
FLIP_384 = np.array([[-1.0, 0.0, 383.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _umbra(data_dir: Path, col: int, row: int, size: int) -> np.ndarray:
    with rasterio.open(data_dir / UMBRA) as ds:
        return ds.read(1, window=Window(col, row, size, size))


def _write(path: Path, data: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=str(data.dtype)) as ds:  # fmt: skip
        ds.write(data, 1)
    return path


def _moving(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a`` warped so that moving pixel x' shows reference pixel ``w^-1 x'``."""
    return cv2.warpAffine(a, w[:2], a.shape[::-1], flags=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def crop(data_dir):
    """A 384 x 384 crop of the Umbra scene (plain uint8)."""
    return _umbra(data_dir, 600, 900, 384)


def _register(tmp_path: Path, ref: np.ndarray, mov: np.ndarray, **estimate):
    r = _write(tmp_path / "ref.tif", ref)
    m = _write(tmp_path / "mov.tif", mov)
    cfg = RegisterConfig(estimate=EstimateConfig(transform="similarity", **estimate))
    return register(r, m, tmp_path / "out.tif", cfg)


def test_hypothesis_at_any_angle_maps_pixels_as_its_matrix_says():
    """A bright dot of the moving image lands, after :meth:`Hypothesis.apply`, where the
    returned matrix maps it; the uncovered corners are masked out."""
    img = np.zeros((120, 160), np.float32)
    img[40:43, 100:103] = 1.0  # centre (101, 41)
    mask = np.ones(img.shape, bool)
    for hyp in (search.Hypothesis(37.0), search.Hypothesis(-50.0, True, 1.0)):
        out, msk, h = hyp.apply(img, mask)
        yx = np.unravel_index(np.argmax(out), out.shape)
        np.testing.assert_allclose(apply_matrix(h, [[101.0, 41.0]])[0], yx[::-1], atol=1.0)
        assert not msk[0, 0] and not msk[-1, -1] and msk[out.shape[0] // 2, out.shape[1] // 2]
        g = hyp.linear()[:2, :2]
        np.testing.assert_allclose(g, h[:2, :2], atol=1e-9)  # scale 1: same linear part


def test_search_keeps_only_the_best_attempts_payload():
    """Each attempt's payload (its moving features, with local descriptors: tens of MB) is
    released as soon as another attempt ranks above it; the winner keeps its own."""
    seen = []

    def try_one(hyp, use_prior):
        seen.append(search.Attempt(hyp, use_prior, n_inliers=int(hyp.rotation_deg) // 10,
                                   payload=f"features {hyp.rotation_deg}"))  # fmt: skip
        return seen[-1]

    first = search.Attempt(search.Hypothesis(), n_inliers=5, payload="features as is")
    todo = [(search.Hypothesis(r), False) for r in (90, 180, 45)]
    res = search.run_search(todo, try_one, first)
    assert res.best is seen[1] and res.best.payload == "features 180"
    assert [a.payload for a in res.tried if a is not res.best] == [None, None, None]
    assert len(res.tried) == 4  # all still reported


def test_hypotheses_cover_every_rotation_scale_and_flip_once():
    """The grid is complete: every rotation of ROTATIONS at every scale of SCALES and
    FINE_SCALES, mirrored and not (111 hypotheses besides the identity; 55 without flips),
    each once, whatever the size ratio and flips_first; the likely ones first (the plain
    right angles at scale 1), the fine scales last."""
    scales = search.SCALES + search.FINE_SCALES
    full = {(r, f, s) for r in search.ROTATIONS for f in (False, True) for s in scales}
    full.discard((0, False, 1.0))
    for kw in (dict(size_ratio=1.0), dict(size_ratio=0.3, flips_first=True), dict()):
        hyps = search.hypotheses(flips=True, **kw)
        keys = [(h.rotation_deg, h.flip, h.scale) for h in hyps]
        assert len(keys) == len(set(keys)) == 111 and set(keys) == full
        assert {h.scale for h in hyps[-32:]} == set(search.FINE_SCALES)
    plain = search.hypotheses(flips=False, size_ratio=1.0)
    assert len(plain) == 55 and not any(h.flip for h in plain)
    assert [h.rotation_deg for h in plain[:3]] == [90, 180, 270]
    assert {h.scale for h in plain[:7]} == {1.0}


class _Ver:
    """A verification outcome as :class:`search.Attempt` reads it."""

    def __init__(self, verdict: str, agree: float = 0.5):
        self.verdict, self.agree_fraction = verdict, agree
        self.windows_agree, self.windows_tried = int(agree * 40), 40


def _attempt(rot: float, verdict: str, inliers: int, screened: bool = True):
    return search.Attempt(search.Hypothesis(rot), n_inliers=inliers, inlier_share=0.1,
                          verification=_Ver(verdict), screened=screened,
                          payload=f"screened {rot}")  # fmt: skip


def test_screened_winner_is_redone_in_full():
    """A screened winner that passed is replaced by its full redo when that passes too, and
    kept when the redo fails; a full (unscreened) winner is not redone."""
    redone = []

    def try_one(verdict):
        def run(hyp, use_prior, full=False):
            assert full
            redone.append(hyp.rotation_deg)
            return search.Attempt(hyp, use_prior, verification=_Ver(verdict), n_inliers=50,
                                  payload=f"full {hyp.rotation_deg}")  # fmt: skip

        return run

    tried = [_attempt(0, "fail", 5, screened=False), _attempt(90, "pass", 40),
             _attempt(180, "fail", 60)]  # fmt: skip
    out = search.redo_in_full(
        search.SearchResult(tried[1], tried), try_one("pass"), lambda a: False
    )
    assert redone == [90] and out.best.payload == "full 90" and not out.best.screened
    assert out.tried[1] is out.best and len(out.tried) == 3
    tried = [_attempt(0, "fail", 5, screened=False), _attempt(90, "pass", 40)]
    out = search.redo_in_full(search.SearchResult(tried[1], tried), try_one("fail"), lambda a: True)
    assert out.best is tried[1] and out.best.payload == "screened 90"  # the redo failed
    redone.clear()
    full_win = _attempt(0, "pass", 40, screened=False)
    out = search.redo_in_full(
        search.SearchResult(full_win, [full_win]), try_one("pass"), lambda a: True
    )
    assert out.best is full_win and redone == []


def test_when_nothing_passes_the_attempts_with_most_inliers_are_redone():
    """No attempt passed: the REDO_FAILED screened attempts with the most inliers are redone
    in full, and the first whose redo passes once corrected by its windows wins (the final
    check then applies that correction); when none does, nothing changes."""
    tried = [
        _attempt(0, "fail", 5, screened=False),
        _attempt(90, "fail", 30),
        _attempt(45, "fail", 90),
        _attempt(135, "fail", 70),
        _attempt(180, "fail", 80),
    ]
    redone = []

    def try_one(hyp, use_prior, full=False):
        redone.append(hyp.rotation_deg)
        return search.Attempt(hyp, use_prior, verification=_Ver("fail"), n_inliers=50,
                              payload=f"full {hyp.rotation_deg}")  # fmt: skip

    found = search.SearchResult(tried[1], tried)
    out = search.redo_in_full(found, try_one, lambda a: a.hypothesis.rotation_deg == 180)
    assert search.REDO_FAILED == 2 and redone == [45, 180]
    assert out.best.payload == "full 180" and out.tried[4] is out.best
    assert all(a.payload is None for a in out.tried if a is not out.best)
    redone.clear()
    out = search.redo_in_full(found, try_one, lambda a: False)
    assert out is found and redone == [45, 180]


def test_size_ratio_ranks_the_scale_of_the_image_sizes_first():
    """A moving image a quarter of the reference's side makes scale 1/4 the first scaled
    hypothesis; the ratio is of sides (square root of the pixel counts), for any aspect."""
    assert search.size_ratio((1024, 1024), (256, 256)) == 0.25
    assert search.size_ratio((256, 256), (1024, 1024)) == 4.0
    assert search.size_ratio((100, 400), (200, 200)) == 1.0
    assert search.size_ratio((0, 0), (10, 10)) == 10.0  # empty reference: no division by zero
    scaled = [h for h in search.hypotheses(flips=False, size_ratio=0.25) if h.scale != 1.0]
    assert scaled[0].scale == 0.25 and scaled[0].rotation_deg == 0
    scaled = [h for h in search.hypotheses(flips=False, size_ratio=4.0) if h.scale != 1.0]
    assert scaled[0].scale == 4.0


@pytest.mark.parametrize(("deg", "scale", "flip"), [(37.0, 1.3, False), (-130.0, 0.6, False),
                                                    (30.0, 1.0, True)])  # fmt: skip
def test_fourier_mellin_proposes_the_rotation_and_scale(crop, deg, scale, flip):
    """The first proposal undoes the warp: its hypothesis' linear map is within 3 deg and 10 %
    of the true moving -> reference one (rotation modulo 180 deg: the other is proposed too)."""
    w = similarity_about_centre(crop.shape, deg, scale, (5.0, -7.0))
    if flip:
        w = w @ FLIP_384
    mov = _moving(crop, w)
    rng = np.random.default_rng(1)
    ref_n = crop / 255.0 * rng.gamma(4.0, 0.25, crop.shape)
    mov_n = mov / 255.0 * rng.gamma(4.0, 0.25, crop.shape)
    props = search.fourier_mellin(ref_n, np.ones(crop.shape, bool), mov_n, mov > 0)
    truth = np.linalg.inv(w)[:2, :2]
    best = props[0].hypothesis
    assert best.flip == flip and best.source == "fourier-mellin"
    if scale == 1.0:  # a scale estimate near 1 is snapped to exactly 1 (no resampling)
        assert best.scale == 1.0
    ok = []
    for p in props[:2]:
        g = p.hypothesis.linear()[:2, :2]
        rel = g @ np.linalg.inv(truth)  # identity when right
        ang = np.degrees(np.arctan2(rel[0, 1], rel[0, 0]))
        ok.append(abs(ang) < 3.0 and abs(np.hypot(*rel[0]) - 1.0) < 0.1)
    assert any(ok), props[:2]


@pytest.mark.parametrize(("deg", "scale"), [(37.0, 1.3), (44.0, 1.4)])
def test_rotated_between_right_angles_and_scaled_registers(crop, tmp_path, deg, scale):
    """Plain images rotated between the right angles and scaled: registered within 1 px of
    the truth (a search over right angles only refuses 44 deg + 1.4x: exit 7)."""
    w = similarity_about_centre(crop.shape, deg, scale, (4.0, -3.0))
    res = _register(tmp_path, crop, _moving(crop, w))
    err = mapping_rmse(res.matrix, np.linalg.inv(w), crop.shape)
    assert err < 1.0, err  # measured 0.08 for both
    rep = res.report
    assert rep["search"]["searched"] and rep["verification"]["verdict"] == "pass"
    assert not rep["search"]["hypothesis"]["flip"]


def test_mirrored_and_rotated_30_deg_registers_with_allow_reflection(crop, tmp_path):
    w = similarity_about_centre(crop.shape, 30.0, 1.0, (3.0, 5.0)) @ FLIP_384
    mov = _moving(crop, w)
    res = _register(tmp_path, crop, mov, allow_reflection=True)
    err = mapping_rmse(res.matrix, np.linalg.inv(w), crop.shape)
    assert err < 1.0, err  # measured 0.04
    assert res.report["search"]["hypothesis"]["flip"] is True
    assert np.linalg.det(res.matrix[:2, :2]) < 0


def test_mirrored_rotated_and_scaled_registers(data_dir, tmp_path):
    """Mirrored, rotated by 100 deg and at half the reference's resolution, so that the
    reference covers only the middle quarter of the moving image: the grid's hypothesis that
    combines all three wins, within 1 px of the truth with --allow-reflection."""
    with rasterio.open(data_dir / UMBRA) as ds:
        region = ds.read(1, window=Window(500, 800, 768, 768)).astype(np.float32)
    ref = region[192:576, 192:576]
    small = cv2.resize(region, (384, 384), interpolation=cv2.INTER_AREA)
    # moving pixel x -> pixel of ``small``: about the centre, rotated 100 deg after a flip
    a = np.deg2rad(100.0)
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([-1.0, 1.0])
    to_small = np.eye(3)
    to_small[:2, :2] = lin
    to_small[:2, 2] = np.array([191.5, 191.5]) - lin @ np.array([191.5, 191.5])
    mov = cv2.warpAffine(small, to_small[:2], (384, 384),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)  # fmt: skip
    small_to_ref = np.array([[2.0, 0.0, 0.5 - 192], [0.0, 2.0, 0.5 - 192], [0.0, 0.0, 1.0]])
    truth = small_to_ref @ to_small  # moving px -> reference px
    res = _register(tmp_path, ref.astype(np.uint8), mov.astype(np.uint8),
                    allow_reflection=True)  # fmt: skip
    rep = res.report
    won = rep["search"]["hypothesis"]
    assert won["flip"] is True and won["scale"] == 0.5, won
    # the error over the overlap (the middle of the moving image)
    inside = np.linalg.inv(truth)
    err = mapping_rmse(res.matrix @ inside, truth @ inside, ref.shape)
    assert err < 1.0, err
    assert rep["verification"]["verdict"] == "pass"
    entry = [t for t in rep["search"]["tried"] if t["description"] == won["description"]]
    assert entry[-1]["screened"] is False  # the winner redone in full
    assert any(t["screened"] for t in rep["search"]["tried"])


def test_a_scale_between_the_grid_steps_registers(data_dir, tmp_path):
    """Mirrored, rotated by 10 deg and at 1/2.8 of the reference's resolution (the reference
    covers an eighth of the moving image): the grid's scales 1/2 and 1/4 are a factor 1.4 off
    and are refused by the check; the scale 2^-1.5 between them registers it within 1 px
    over the overlap."""
    n, k = 384, 2.8
    big = round(n * k)
    with rasterio.open(data_dir / UMBRA) as ds:
        region = ds.read(1, window=Window(400, 500, big, big)).astype(np.float32)
    c0 = (big - n) // 2
    ref = region[c0 : c0 + n, c0 : c0 + n]
    small = cv2.resize(region, (n, n), interpolation=cv2.INTER_AREA)
    a = np.deg2rad(10.0)
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([-1.0, 1.0])
    to_small = np.eye(3)
    to_small[:2, :2] = lin
    centre = np.full(2, (n - 1) / 2)
    to_small[:2, 2] = centre - lin @ centre
    mov = cv2.warpAffine(small, to_small[:2], (n, n),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)  # fmt: skip
    f = big / n
    small_to_ref = np.array([[f, 0.0, 0.5 * f - 0.5 - c0], [0.0, f, 0.5 * f - 0.5 - c0],
                             [0.0, 0.0, 1.0]])  # fmt: skip
    truth = small_to_ref @ to_small  # moving px -> reference px
    res = _register(tmp_path, ref.astype(np.uint8), mov.astype(np.uint8),
                    allow_reflection=True)  # fmt: skip
    won = res.report["search"]["hypothesis"]
    assert won["flip"] is True and won["scale"] in search.FINE_SCALES, won
    inside = np.linalg.inv(truth)
    err = mapping_rmse(res.matrix @ inside, truth @ inside, ref.shape)
    assert err < 1.0, err  # measured 0.04
    assert res.report["verification"]["verdict"] == "pass"


def test_mirrored_and_rotated_30_deg_refused_without_allow_reflection(crop, tmp_path, capsys):
    w = similarity_about_centre(crop.shape, 30.0, 1.0, (3.0, 5.0)) @ FLIP_384
    ref = _write(tmp_path / "ref.tif", crop)
    mov = _write(tmp_path / "mov.tif", _moving(crop, w))
    out = tmp_path / "out" / "o.tif"
    out.parent.mkdir()
    code = main([str(a) for a in ["register", ref, mov, "-o", out, "--no-progress"]])
    err = capsys.readouterr().err
    assert code == 8, err
    assert "--allow-reflection" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_unrelated_images_refused_by_the_wider_search(data_dir, tmp_path, capsys):
    """Two different parts of the scene: every hypothesis (any angle, mirrored, scaled) fails
    its check, and nothing is written."""
    ref = _write(tmp_path / "ref.tif", _umbra(data_dir, 600, 900, 384))
    mov = _write(tmp_path / "mov.tif", _umbra(data_dir, 1500, 100, 384))
    out = tmp_path / "out" / "o.tif"
    out.parent.mkdir()
    code = main([str(a) for a in ["register", ref, mov, "-o", out, "--no-progress",
                                  "--allow-reflection"]])  # fmt: skip
    err = capsys.readouterr().err
    assert code in (7, 8), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(out.parent.iterdir()) == []


class _Terminal:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("progress", [True, False])
def test_the_search_shows_its_progress_on_a_terminal(crop, tmp_path, monkeypatch, progress):
    """A search can try every hypothesis before it refuses (a minute or more): with progress
    on and stderr a terminal, a 'search' bar counts the hypotheses; with progress off,
    nothing is drawn."""
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    w = similarity_about_centre(crop.shape, 90.0, 1.0, (2.0, 1.0))
    r = _write(tmp_path / "ref.tif", crop)
    m = _write(tmp_path / "mov.tif", _moving(crop, w))
    cfg = RegisterConfig(estimate=EstimateConfig(transform="similarity"), progress=progress)
    res = register(r, m, tmp_path / "out.tif", cfg)
    assert res.report["search"]["searched"]
    assert ("search:" in term.text and "hypothesis" in term.text) is progress, term.text[-300:]
