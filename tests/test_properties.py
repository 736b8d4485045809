"""Laws that hold for every input, checked on inputs drawn by hypothesis (few examples each, so
the suite stays fast; the draws are derandomized: the same examples every run)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sarreg.atomic import atomic_write
from sarreg.features import FAST_R2D2_RADIUS, ExtractConfig, extract
from sarreg.geometry import (
    apply_matrix,
    fit_transform,
    map_to_pixel,
    pixel_to_map,
    prior_from_georef,
)
from sarreg.model import build_model

FEW = settings(max_examples=15, deadline=None, derandomize=True)
finite = dict(allow_nan=False, allow_infinity=False)


# ------------------------------------------------------------------ pixel <-> map coordinates


@st.composite
def geotransforms(draw) -> Affine:
    """North-up, rotated, sheared or flipped (either axis) geotransforms, non-singular."""
    size = draw(st.floats(0.05, 500.0, **finite))
    angle = draw(st.floats(-180.0, 180.0, **finite))
    aspect = draw(st.floats(0.5, 2.0, **finite))
    shear = draw(st.floats(-20.0, 20.0, **finite))
    flip_x = draw(st.sampled_from([1.0, -1.0]))
    flip_y = draw(st.sampled_from([1.0, -1.0]))
    x0 = draw(st.floats(-1e6, 1e6, **finite))
    y0 = draw(st.floats(-1e7, 1e7, **finite))
    return (Affine.translation(x0, y0) @ Affine.rotation(angle) @ Affine.shear(shear, 0)
            @ Affine.scale(size * flip_x, -size * aspect * flip_y))  # fmt: skip


pixels = st.lists(
    st.tuples(st.floats(-5000, 5000, **finite), st.floats(-5000, 5000, **finite)),
    min_size=1, max_size=20,
)  # fmt: skip


@FEW
@given(t=geotransforms(), xy=pixels)
def test_pixel_map_round_trip_for_any_geotransform(t, xy):
    xy = np.array(xy, dtype=np.float64)
    back = map_to_pixel(t, pixel_to_map(t, xy))
    np.testing.assert_allclose(back, xy, atol=1e-6 * (1 + np.abs(xy).max()))


@FEW
@given(t=geotransforms(), xy=pixels)
def test_pixel_centres_are_half_a_pixel_inside_the_corners(t, xy):
    """Pixel centre (x, y) is the corner point (x + 0.5, y + 0.5) of rasterio's convention."""
    xy = np.array(xy, dtype=np.float64)
    expected = np.array([t @ (x + 0.5, y + 0.5) for x, y in xy])
    np.testing.assert_allclose(pixel_to_map(t, xy), expected, rtol=1e-12, atol=1e-6)


# CRS pairs around one area (UTM 33N, its neighbour zone, geographic, web mercator, UTM 33S)
CRS_PAIRS = [
    ("EPSG:32633", "EPSG:32633"),
    ("EPSG:32633", "EPSG:32634"),
    ("EPSG:32633", "EPSG:4326"),
    ("EPSG:4326", "EPSG:3857"),
    ("EPSG:32633", "EPSG:3857"),
]


def _grid_at(crs: str, pixel: float, rot: float) -> Affine:
    """A geotransform over 18 E, 45 N (about 40 km wide) in ``crs``."""
    from rasterio.warp import transform as warp_transform

    xs, ys = warp_transform("EPSG:4326", crs, [18.0], [45.0])
    if crs == "EPSG:4326":
        pixel = pixel / 111_000.0
    return Affine.translation(xs[0], ys[0]) @ Affine.rotation(rot) @ Affine.scale(pixel, -pixel)


@FEW
@given(
    pair=st.sampled_from(CRS_PAIRS),
    px=st.tuples(st.floats(5.0, 40.0, **finite), st.floats(5.0, 40.0, **finite)),
    rot=st.tuples(st.floats(-30, 30, **finite), st.floats(-30, 30, **finite)),
    xy=st.lists(
        st.tuples(st.floats(0, 1000, **finite), st.floats(0, 1000, **finite)),
        min_size=1,
        max_size=10,
    ),  # fmt: skip
)
def test_georeferencing_prior_round_trips_between_crs(pair, px, rot, xy):
    """moving px -> reference px -> moving px is the identity for any CRS pair; and the
    reference pixel lands on the same ground point."""
    crs_a, crs_b = pair
    ta, tb = _grid_at(crs_a, px[0], rot[0]), _grid_at(crs_b, px[1], rot[1])
    xy = np.array(xy, dtype=np.float64)
    forward = prior_from_georef(tb, crs_b, ta, crs_a)  # a (moving) -> b (reference)
    backward = prior_from_georef(ta, crs_a, tb, crs_b)
    on_b = forward(xy)
    np.testing.assert_allclose(backward(on_b), xy, atol=1e-4)
    from rasterio.warp import transform as warp_transform

    ga = warp_transform(crs_a, "EPSG:4326", *pixel_to_map(ta, xy).T.tolist())
    gb = warp_transform(crs_b, "EPSG:4326", *pixel_to_map(tb, on_b).T.tolist())
    np.testing.assert_allclose(np.array(gb), np.array(ga), atol=1e-7)  # degrees, ~1 cm


# --------------------------------------------------------------- transform fit then apply


@st.composite
def transforms(draw, model: str) -> np.ndarray:
    """A plausible moving -> reference matrix of ``model`` over a 512 x 512 image."""
    tx, ty = draw(st.floats(-100, 100, **finite)), draw(st.floats(-100, 100, **finite))
    m = np.eye(3)
    m[:2, 2] = tx, ty
    if model == "translation":
        return m
    angle = np.deg2rad(draw(st.floats(-180, 180, **finite)))
    s = draw(st.floats(0.5, 2.0, **finite))
    m[:2, :2] = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if model == "similarity":
        return m
    sx, sy = draw(st.floats(0.8, 1.25, **finite)), draw(st.floats(-0.2, 0.2, **finite))
    m[:2, :2] = m[:2, :2] @ np.array([[sx, sy], [0.0, 1.0 / sx]])
    if model == "affine":
        return m
    m[2, :2] = draw(st.floats(-2e-4, 2e-4, **finite)), draw(st.floats(-2e-4, 2e-4, **finite))
    return m


@pytest.mark.parametrize("model", ["translation", "similarity", "affine", "homography"])
def test_fit_then_apply_recovers_any_transform(model):
    @settings(max_examples=10, deadline=None, derandomize=True)
    @given(m=transforms(model), seed=st.integers(0, 2**31 - 1))
    def law(m, seed):
        rng = np.random.default_rng(seed)
        src = rng.uniform(0, 511, size=(60, 2))
        dst = apply_matrix(m, src)
        # a quarter of gross outliers: RANSAC must set them aside
        bad = rng.choice(60, 15, replace=False)
        dst[bad] += rng.uniform(40, 200, size=(15, 2)) * rng.choice([-1, 1], size=(15, 2))
        fit = fit_transform(src, dst, model=model, threshold=1.0)
        assert fit.model == model
        assert not fit.inliers[bad].any() and fit.inliers.sum() == 45
        grid = np.stack(np.meshgrid(np.arange(0, 512, 64.0), np.arange(0, 512, 64.0)), -1)
        grid = grid.reshape(-1, 2)
        np.testing.assert_allclose(apply_matrix(fit.matrix, grid), apply_matrix(m, grid),
                                   atol=1e-4)  # fmt: skip

    law()


# -------------------------------------------------------------------------- atomic writes

FAILURE_POINTS = ["before writing", "after a partial write", "after a full write"]


class _Boom(Exception):
    pass


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    where=st.sampled_from(FAILURE_POINTS),
    existing=st.booleans(),
    overwrite=st.booleans(),
    suffix=st.sampled_from([".tif", ".json", ".npz", ".csv"]),
    data=st.binary(min_size=0, max_size=4096),
    interrupt=st.booleans(),
)
def test_atomic_write_never_leaves_a_file_on_failure(
    tmp_path_factory, where, existing, overwrite, suffix, data, interrupt
):
    """Whatever the failure point (an exception or Ctrl-C): the folder holds exactly what it
    held before: no partial output, no temporary file, an existing file unchanged."""
    folder = tmp_path_factory.mktemp("atomic")
    final = folder / f"out{suffix}"
    if existing:
        final.write_bytes(b"old content")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    err = KeyboardInterrupt if interrupt else _Boom
    if existing and not overwrite:
        from sarreg.errors import OutputExistsError

        with pytest.raises(OutputExistsError):
            with atomic_write(final, overwrite=overwrite):
                pass
    else:
        with pytest.raises(err):
            with atomic_write(final, overwrite=overwrite) as tmp:
                if where != "before writing":
                    with open(tmp, "wb") as f:
                        f.write(data if where == "after a full write" else data[: len(data) // 2])
                raise err()
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before


# ------------------------------------------------------------- tiling invariance of extract


@pytest.fixture(scope="module")
def seeded_net(data_dir):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        crop = ds.read(1, window=((700, 892), (600, 792))).astype(np.float32) / 255.0
    torch.manual_seed(0)
    net = build_model("fast_r2d2", mchan=1, dim=32)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(crop)[None, None])
    net.eval()
    cfg = ExtractConfig(scales=(1.0,), rep_threshold=0.4, rel_threshold=0.0, top_k=100000,
                        min_size=64, refine_radius=0, context_scale=None, tile_size=4096,
                        progress=False)  # fmt: skip
    return net, crop, cfg, extract(net, crop, None, cfg)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(tile=st.integers(64, 200), overlap=st.integers(FAST_R2D2_RADIUS + 1, 64))
def test_extraction_does_not_depend_on_the_tiling(seeded_net, tile, overlap):
    """Any tile size with an overlap beyond the network's reach (its receptive field + 1 for
    the 3 x 3 non-maximum suppression) gives the keypoints, scores
    and descriptors of the untiled extraction."""
    from dataclasses import replace

    net, crop, cfg, whole = seeded_net
    tiled = extract(net, crop, None, replace(cfg, tile_size=tile, tile_overlap=overlap))
    assert len(whole) > 50
    key = {tuple(p): i for i, p in enumerate(whole.keypoints.tolist())}
    pairs = [(key[tuple(p)], j) for j, p in enumerate(tiled.keypoints.tolist()) if tuple(p) in key]
    assert len(pairs) >= 0.99 * max(len(whole), len(tiled))
    i, j = np.array(pairs).T
    np.testing.assert_allclose(tiled.scores[j], whole.scores[i], atol=1e-5)
    np.testing.assert_allclose(tiled.descriptors[j], whole.descriptors[i], atol=1e-4)


# ----------------------------------------------------------------- decomposition and outline


@FEW
@given(
    angle=st.floats(-179.0, 179.0, **finite),
    sx=st.floats(0.2, 5.0, **finite),
    sy=st.floats(0.2, 5.0, **finite),
    tx=st.floats(-1e3, 1e3, **finite),
    ty=st.floats(-1e3, 1e3, **finite),
)
def test_decompose_recovers_rotation_axis_scales_and_shift(angle, sx, sy, tx, ty):
    """M = [R(angle) diag(sx, sy) | t]: the decomposition gives back each parameter."""
    from sarreg.geometry import decompose_matrix, matrix_scale_rotation

    a = np.deg2rad(angle)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = r @ np.diag([sx, sy])
    m[:2, 2] = tx, ty
    d = decompose_matrix(m)
    assert d.scale_x == pytest.approx(sx, rel=1e-9) and d.scale_y == pytest.approx(sy, rel=1e-9)
    assert d.scale == pytest.approx(np.sqrt(sx * sy), rel=1e-9)
    assert d.rotation_deg == pytest.approx(angle, abs=1e-7)
    assert d.shear == pytest.approx(0.0, abs=1e-9)
    assert (d.tx, d.ty) == pytest.approx((tx, ty), abs=1e-9)
    assert matrix_scale_rotation(m) == pytest.approx((d.scale, d.rotation_deg))


@FEW
@given(h=st.integers(1, 5000), w=st.integers(1, 5000), densify=st.integers(2, 30))
def test_pixel_outline_is_the_grid_boundary(h, w, densify):
    """The outline runs along the outer pixel corners: its polygon is the W x H rectangle
    from (-0.5, -0.5), every point on its boundary, evenly spaced along each edge."""
    from shapely.geometry import Polygon

    from sarreg.geometry import pixel_outline

    ring = pixel_outline((h, w), densify)
    assert ring.shape == (4 * (densify - 1), 2)
    poly = Polygon(ring)
    assert poly.is_valid and poly.area == pytest.approx(w * h, rel=1e-9)
    assert poly.bounds == pytest.approx((-0.5, -0.5, w - 0.5, h - 0.5))
    steps = np.diff(np.vstack([ring, ring[:1]]), axis=0)
    n = densify - 1
    for k, side in enumerate((w, h, w, h)):
        np.testing.assert_allclose(np.hypot(*steps[k * n : (k + 1) * n].T), side / n)


@FEW
@given(k=st.floats(-0.8, 0.8, **finite), sx=st.floats(0.3, 3.0, **finite))
def test_decompose_measures_shear_as_the_cosine_between_the_axes(k, sx):
    """Columns (sx, 0) and (k, sqrt(1 - k^2)): the shear is the cosine between them, k."""
    from sarreg.geometry import decompose_matrix

    m = np.eye(3)
    m[:2, :2] = [[sx, k], [0.0, np.sqrt(1 - k * k)]]
    d = decompose_matrix(m)
    assert d.shear == pytest.approx(k, abs=1e-9) and d.scale_y == pytest.approx(1.0)


@FEW
@given(
    min_similarity=st.floats(-1.0, 1.0, **finite),
    chunk=st.integers(1, 10_000),
    bad_similarity=st.one_of(st.floats(-10, -1.0001, **finite), st.floats(1.0001, 10, **finite)),
    bad_chunk=st.integers(-100, 0),
)
def test_match_config_accepts_its_whole_range_and_nothing_else(
    min_similarity, chunk, bad_similarity, bad_chunk
):
    from sarreg.matching import MatchConfig

    MatchConfig(min_similarity=min_similarity, chunk=chunk)
    with pytest.raises(ValueError, match="min_similarity"):
        MatchConfig(min_similarity=bad_similarity)
    with pytest.raises(ValueError, match="chunk"):
        MatchConfig(chunk=bad_chunk)
