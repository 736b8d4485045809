"""Mutual nearest-neighbour matching: identity, permutation, filters, prior radius, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from sarreg.matching import MatchConfig, Matches, match_mutual


def unit(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy(desc, rng, sigma):
    x = desc + rng.normal(0, sigma, desc.shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_sets_give_identity():
    d = unit(np.random.default_rng(0), 500)
    m = match_mutual(d, d, MatchConfig())
    assert isinstance(m, Matches) and len(m) == 500
    np.testing.assert_array_equal(np.sort(m.idx_ref), np.arange(500))
    np.testing.assert_array_equal(m.idx_ref, m.idx_mov)
    np.testing.assert_allclose(m.similarity, 1.0, atol=1e-5)
    assert m.idx_ref.dtype == np.int64 and m.similarity.dtype == np.float32
    assert np.all(np.diff(m.similarity) <= 0)  # sorted best first


def test_shuffled_noisy_set_recovered():
    rng = np.random.default_rng(1)
    ref = unit(rng, 800)
    perm = rng.permutation(800)
    mov = noisy(ref[perm], rng, 0.05)  # mov[i] ~ ref[perm[i]]
    m = match_mutual(ref, mov, MatchConfig(min_similarity=0.5))
    assert len(m) == 800
    np.testing.assert_array_equal(m.idx_ref, perm[m.idx_mov])


def test_mutuality_rejects_one_sided_matches():
    # two moving descriptors both closest to reference 0; only the closer one is mutual
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    mov = np.array([[0.99, 0.141], [0.95, 0.312]], np.float32)
    mov /= np.linalg.norm(mov, axis=1, keepdims=True)
    m = match_mutual(ref, mov, MatchConfig(min_similarity=-1))
    assert list(zip(m.idx_ref, m.idx_mov, strict=True)) == [(0, 0)]


def test_similarity_threshold_and_ratio_test_reject():
    rng = np.random.default_rng(2)
    ref = unit(rng, 300)
    mov = noisy(ref, rng, 0.1)
    sims = (ref * mov).sum(axis=1)
    thr = float(np.median(sims))
    loose = match_mutual(ref, mov, MatchConfig(min_similarity=-1))
    strict = match_mutual(ref, mov, MatchConfig(min_similarity=thr))
    assert len(loose) == 300
    assert np.all(strict.similarity >= thr)
    assert len(strict) == np.sum(sims >= thr) == 150
    # ratio test: make reference 1 an (almost) duplicate of reference 0 -> ambiguous
    ref2 = ref.copy()
    ref2[1] = noisy(ref[:1], rng, 0.01)[0]
    plain = match_mutual(ref2, mov, MatchConfig(min_similarity=-1))
    ratio = match_mutual(ref2, mov, MatchConfig(min_similarity=-1, ratio=0.9))
    assert 0 in set(plain.idx_mov) | set(plain.idx_ref)
    assert 0 not in set(ratio.idx_ref) and 1 not in set(ratio.idx_ref)
    assert len(ratio) < len(plain)


def test_prior_radius_excludes_far_match():
    rng = np.random.default_rng(3)
    ref = unit(rng, 4)
    xy_ref = np.array([[10.0, 10.0], [100.0, 10.0], [10.0, 100.0], [500.0, 500.0]])
    # moving keypoint 0 looks exactly like reference 3 (far away), a bit like reference 0
    mov = np.stack([ref[3], ref[1], ref[2]])
    mov[0] = 0.8 * ref[3] + 0.6 * ref[0]
    mov /= np.linalg.norm(mov, axis=1, keepdims=True)
    xy_mov = np.array([[5.0, 5.0], [95.0, 5.0], [5.0, 95.0]])

    def prior(xy):
        return xy + 5.0  # moving -> reference: shift by (5, 5)

    free = match_mutual(ref, mov, MatchConfig(min_similarity=0.1))
    assert (3, 0) in set(zip(free.idx_ref, free.idx_mov, strict=True))
    cfg = MatchConfig(min_similarity=0.1, radius=20.0)
    guided = match_mutual(ref, mov, cfg, xy_ref=xy_ref, xy_mov=xy_mov, prior=prior)
    pairs = set(zip(guided.idx_ref.tolist(), guided.idx_mov.tolist(), strict=True))
    assert pairs == {(0, 0), (1, 1), (2, 2)}
    # no radius: the prior is ignored
    same = match_mutual(ref, mov, MatchConfig(min_similarity=0.1), xy_ref, xy_mov, prior)
    np.testing.assert_array_equal(same.idx_ref, free.idx_ref)

    # a prior that cannot predict a point (NaN) leaves it unmatched
    def partial(xy):
        out = prior(xy)
        out[1] = np.nan
        return out

    part = match_mutual(ref, mov, cfg, xy_ref=xy_ref, xy_mov=xy_mov, prior=partial)
    assert set(zip(part.idx_ref.tolist(), part.idx_mov.tolist(), strict=True)) == {(0, 0), (2, 2)}
    with pytest.raises(ValueError, match="xy_ref"):
        match_mutual(ref, mov, cfg, prior=prior)


@pytest.mark.parametrize("chunk", [5, 32, 1000])
def test_chunk_size_does_not_change_result(chunk):
    rng = np.random.default_rng(4)
    ref = unit(rng, 150)
    mov = noisy(ref[rng.permutation(150)][:120], rng, 0.4)
    xy_ref = rng.uniform(0, 200, (150, 2))
    xy_mov = rng.uniform(0, 200, (120, 2))
    base_cfg = MatchConfig(min_similarity=0.2, ratio=0.95, radius=80.0, chunk=4096)
    base = match_mutual(ref, mov, base_cfg, xy_ref, xy_mov, prior=lambda p: p)
    got = match_mutual(
        ref, mov, MatchConfig(0.2, 0.95, 80.0, chunk=chunk), xy_ref, xy_mov, prior=lambda p: p
    )
    assert len(base) > 10
    np.testing.assert_array_equal(got.idx_ref, base.idx_ref)
    np.testing.assert_array_equal(got.idx_mov, base.idx_mov)
    np.testing.assert_allclose(got.similarity, base.similarity, atol=1e-6)


def test_empty_inputs_and_bad_config():
    d = unit(np.random.default_rng(5), 3)
    assert len(match_mutual(d[:0], d)) == 0
    assert len(match_mutual(d, d[:0])) == 0
    with pytest.raises(ValueError):
        MatchConfig(ratio=1.5)
    with pytest.raises(ValueError, match="dimensions"):
        match_mutual(d, d[:, :4])


def test_real_chain_recovers_shift(data_dir):
    """Umbra crop vs the same crop shifted by (27, 13) px: extract -> match -> fit translation."""
    import rasterio
    import torch

    from sarreg.features import ExtractConfig, extract
    from sarreg.geometry import fit_transform
    from sarreg.model import build_model

    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        img = ds.read(1, window=((600, 1000), (600, 1000))).astype(np.float32) / 255.0
    torch.manual_seed(0)
    net = build_model("fast_r2d2", mchan=2)
    for mod in net.modules():  # fit the batch-norm statistics of the random net to the image
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(img)[None, None])
    net.eval()
    ref, mov = img[:320, :320], img[13:333, 27:347]
    cfg = ExtractConfig(scales=(1.0, 0.71), rep_threshold=0.45, rel_threshold=0.0, top_k=1000)
    f_ref, f_mov = extract(net, ref, None, cfg), extract(net, mov, None, cfg)
    m = match_mutual(f_ref, f_mov, MatchConfig(min_similarity=0.5))
    fit = fit_transform(f_mov.keypoints[m.idx_mov], f_ref.keypoints[m.idx_ref], "translation")
    assert fit.n_inliers > 50
    np.testing.assert_allclose(fit.matrix[:2, 2], [27.0, 13.0], atol=0.5)


# --------------------------------------------------------------------------------------------
# refine_keypoints


def _features(xy, desc, local=None, offsets=None, scales=None, shape=(100, 100)):
    from sarreg.features import Features

    xy = np.asarray(xy, np.float32)
    return Features(
        xy, np.ones(len(xy), np.float32) if scales is None else np.asarray(scales, np.float32),
        np.ones(len(xy), np.float32), np.asarray(desc, np.float32), shape, local, offsets,
    )  # fmt: skip


def test_refine_moves_each_matched_keypoint_to_its_best_neighbour():
    from sarreg.features import local_offsets
    from sarreg.matching import refine_keypoints

    rng = np.random.default_rng(5)
    ref_desc = unit(rng, 3)
    offsets = local_offsets(2)  # 25 offsets
    local = unit(rng, 3 * 25).reshape(3, 25, 32)
    # moving keypoint 0 is best matched 2 px right and 1 px up of where it was detected;
    # keypoint 1 (detected at scale 2: offsets count double) 1 px left; keypoint 2 unmatched
    k0 = int(np.flatnonzero((offsets == [2, -1]).all(axis=1))[0])
    k1 = int(np.flatnonzero((offsets == [-1, 0]).all(axis=1))[0])
    local[0, k0] = ref_desc[1]
    local[1, k1] = ref_desc[0]
    mov = _features(
        [[10, 10], [50, 60], [70, 70]], unit(rng, 3), local.astype(np.float16), offsets,
        scales=[1, 2, 1],
    )  # fmt: skip
    ref = _features([[0, 0], [1, 1], [2, 2]], ref_desc)
    matches = Matches(np.array([1, 0]), np.array([0, 1]), np.array([0.9, 0.8], np.float32))
    out = refine_keypoints(ref, mov, matches)
    # whole-pixel moves plus a sub-pixel correction of at most half a level pixel
    np.testing.assert_allclose(out.keypoints, [[12, 9], [48, 60], [70, 70]], atol=1.0)
    np.testing.assert_array_equal(np.round(out.keypoints[0]), [12, 9])
    assert abs(out.keypoints[1, 0] - 48) <= 1.0 and out.keypoints[1, 1] == pytest.approx(60, abs=1)
    np.testing.assert_array_equal(out.keypoints[2], [70, 70])
    np.testing.assert_array_equal(mov.keypoints, [[10, 10], [50, 60], [70, 70]])  # a copy
    np.testing.assert_array_equal(out.descriptors, mov.descriptors)
    # no local descriptors: unchanged
    plain = _features(mov.keypoints, mov.descriptors)
    assert refine_keypoints(ref, plain, matches) is plain
    with pytest.raises(ValueError, match="one-to-one"):
        refine_keypoints(ref, mov, Matches(np.array([0, 1]), np.array([0, 0]), np.ones(2)))


def test_subpixel_peak_of_a_parabola():
    from sarreg.matching import _subpixel

    side = 5
    c = np.arange(side) - 2.0
    peak = np.array([0.3, -0.2])  # (x, y) offset of the true maximum from the grid centre
    sim = 1.0 - 0.05 * ((c[None, :] - peak[0]) ** 2 + (c[:, None] - peak[1]) ** 2)
    best = np.array([int(np.argmax(sim))])
    np.testing.assert_allclose(_subpixel(sim[None], best, side)[0], peak, atol=1e-6)
    # a maximum on the grid's edge gets no correction
    edge = np.zeros((1, side, side))
    edge[0, 0, 0] = 1.0
    np.testing.assert_array_equal(_subpixel(edge, np.array([0]), side), [[0.0, 0.0]])
    # ... on either edge: no extrapolation past the last neighbour searched
    far = np.zeros((1, side, side))
    far[0, side - 1, side - 1], far[0, side - 2, side - 2] = 1.0, 0.5
    np.testing.assert_array_equal(_subpixel(far, np.array([side * side - 1]), side), [[0, 0]])


def _with_local(rng, ref_desc, perm, sigma, offset):
    """Moving Features whose own descriptors are ``ref_desc[perm]`` with noise ``sigma`` and
    whose local descriptor at ``offset`` (level px) is exactly ``ref_desc[perm]``."""
    from sarreg.features import local_offsets

    offsets = local_offsets(3)
    k = int(np.flatnonzero((offsets == offset).all(axis=1))[0])
    own = noisy(ref_desc[perm], rng, sigma)
    local = np.stack([noisy(own, rng, 0.3) for _ in range(len(offsets))], axis=1)
    local[:, k] = ref_desc[perm]
    xy = rng.uniform(10, 90, (len(perm), 2))
    return _features(xy, own, local.astype(np.float16), offsets)


def test_local_descriptors_recover_matches_the_own_descriptors_miss():
    rng = np.random.default_rng(7)
    ref_desc = unit(rng, 300)
    perm = rng.permutation(300)
    ref = _features(rng.uniform(10, 90, (300, 2)), ref_desc)
    mov = _with_local(rng, ref_desc, perm, 0.25, [2, -1])  # within local_radius 2
    plain = match_mutual(ref, mov, MatchConfig(min_similarity=-1, local_radius=0))
    local = match_mutual(ref, mov, MatchConfig(min_similarity=-1, local_radius=2))
    right = perm[local.idx_mov] == local.idx_ref
    assert right.all() and len(local) >= 295
    assert np.sum(perm[plain.idx_mov] == plain.idx_ref) < 0.8 * len(local)  # measured: 211
    np.testing.assert_allclose(local.similarity, 1.0, atol=2e-3)  # the exact local copy
    assert np.all(np.diff(local.similarity) <= 0)
    # the copy lies 3 px away: outside local_radius 2, so it is not used
    far = _with_local(rng, ref_desc, perm, 0.25, [3, 0])
    near2 = match_mutual(ref, far, MatchConfig(min_similarity=-1, local_radius=2))
    assert near2.similarity.max() < 0.999
    # a similarity floor and the ratio test apply to the local similarities
    strict = match_mutual(ref, mov, MatchConfig(min_similarity=0.999, local_radius=2))
    assert len(strict) >= 295
    assert len(match_mutual(ref, far, MatchConfig(min_similarity=0.999, local_radius=2))) == 0
    # exact copies (distance 0) pass any ratio test; the noisy far ones mostly fail it
    assert len(match_mutual(ref, mov, MatchConfig(-1, ratio=0.5, local_radius=2))) >= 295
    loose = match_mutual(ref, far, MatchConfig(-1, local_radius=2))
    assert len(match_mutual(ref, far, MatchConfig(-1, ratio=0.8, local_radius=2))) < len(loose) / 2


def test_local_matching_respects_the_prior():
    rng = np.random.default_rng(8)
    ref_desc = unit(rng, 40)
    perm = np.arange(40)
    ref = _features(rng.uniform(0, 1000, (40, 2)), ref_desc)
    mov = _with_local(rng, ref_desc, perm, 0.05, [1, 1])
    mov.keypoints = (ref.keypoints - 5.0).astype(np.float32)  # moving = reference - (5, 5)
    cfg = MatchConfig(min_similarity=-1, radius=20.0)
    good = match_mutual(ref, mov, cfg, prior=lambda xy: xy + 5.0)
    assert len(good) == 40 and np.all(good.idx_ref == good.idx_mov)
    # a prior 100 px off: only pairs within the radius of its (wrong) prediction
    off = match_mutual(ref, mov, cfg, prior=lambda xy: xy + 105.0)
    gap = np.hypot(*(mov.keypoints[off.idx_mov] + 105.0 - ref.keypoints[off.idx_ref]).T)
    assert np.all(gap <= 20.0) and not np.any(off.idx_ref == off.idx_mov)


def test_refinement_makes_real_matches_more_accurate(data_dir):
    """Shipped model on a speckled pair of a real SAR crop (Umbra) with a known warp: the
    refined matches are correct (within 3 px) more often than the detected positions."""
    import rasterio

    from sarreg.evaluation.metrics import match_errors
    from sarreg.features import ExtractConfig, extract
    from sarreg.matching import refine_keypoints
    from sarreg.model.checkpoint import load_default_model
    from sarreg.training import synth

    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        dn = ds.read(1, window=((500, 1200), (500, 1200)))
    mask = dn > 0
    scene = synth.smooth_intensity(synth.to_linear_intensity(dn, "display", "amplitude"), mask)
    ranges = synth.SynthConfig(rotation_deg=10, scale=(0.9, 1.1), looks=(2.0, 2.0), noise_prob=0.0,
                        display_prob=0.0)  # fmt: skip
    pair = synth.make_pair(scene, mask, (90, 90), 512, np.random.default_rng(4), ranges)
    net = load_default_model().net
    cfg = ExtractConfig(scales=(1.0,), top_k=1500, progress=False)
    f1 = extract(net, pair.image1, pair.mask1, cfg)
    f2 = extract(net, pair.image2, pair.mask2, cfg)
    m = match_mutual(f1, f2, MatchConfig(min_similarity=-1))
    assert len(m) > 300

    def correct(kp2):
        err = match_errors(kp2[m.idx_mov], f1.keypoints[m.idx_ref],
                           lambda xy: synth.apply_homography(pair.homography, xy))  # fmt: skip
        return float(np.mean(err <= 3.0))

    refined = refine_keypoints(f1, f2, m)
    shift = np.abs(refined.keypoints - f2.keypoints).max(axis=1)
    assert shift.max() <= cfg.refine_radius + 0.5
    assert correct(refined.keypoints) > correct(f2.keypoints) + 0.03  # measured: 0.57 -> 0.64


def test_local_matching_with_context_adds_the_keypoints_context():
    """Descriptors ``[d, sqrt(w) c] / sqrt(1 + w)`` with point-only local descriptors: a pair
    scores ``(max_k local_k . d_ref + w c_mov . c_ref) / (1 + w)``, as if every local
    descriptor carried its keypoint's context."""
    from sarreg.features import with_context

    rng = np.random.default_rng(11)
    n, w = 60, 1.0
    ref_point, ref_ctx = unit(rng, n), unit(rng, n)
    perm = rng.permutation(n)
    mov = _with_local(rng, ref_point, perm, 0.6, [1, 0])
    mov_ctx = noisy(ref_ctx[perm], rng, 0.2)
    ref = _features(rng.uniform(10, 90, (n, 2)), with_context(ref_point, ref_ctx, w))
    mov_c = _features(
        mov.keypoints, with_context(mov.descriptors, mov_ctx, w), mov.local_descriptors,
        mov.local_offsets,
    )  # fmt: skip
    cfg = MatchConfig(min_similarity=-1, local_radius=2, candidates=n)
    got = match_mutual(ref, mov_c, cfg)
    # brute force: every local descriptor extended by its keypoint's context
    from sarreg.matching import _local_subset

    local = _local_subset(mov, 2).astype(np.float32)  # (n, K, 32)
    point = np.einsum("mkd,nd->mnk", local, ref_point).max(axis=2)  # (mov, ref)
    sim = (point + w * mov_ctx @ ref_ctx.T) / (1 + w)
    best_ref = sim.argmax(axis=1)
    mutual = sim.argmax(axis=0)[best_ref] == np.arange(n)
    assert mutual.sum() >= 0.9 * n
    np.testing.assert_array_equal(np.sort(got.idx_mov), np.flatnonzero(mutual))
    np.testing.assert_array_equal(got.idx_ref, best_ref[got.idx_mov])
    np.testing.assert_allclose(got.similarity, sim[got.idx_mov, got.idx_ref], atol=2e-3)
    assert np.all(perm[got.idx_mov] == got.idx_ref)


def test_match_config_refuses_values_out_of_range():
    MatchConfig(min_similarity=1.0, chunk=1)  # the bounds themselves are allowed
    MatchConfig(min_similarity=-1.0)
    for bad in ({"min_similarity": 1.5}, {"min_similarity": -1.5}, {"chunk": 0}):
        with pytest.raises(ValueError):
            MatchConfig(**bad)


def test_ratio_one_still_rejects_an_exact_tie():
    """A moving descriptor equally close to two references is ambiguous: even the loosest
    ratio test (1.0) refuses it, while the other keypoints match."""
    rng = np.random.default_rng(11)
    ref = unit(rng, 6)
    ref[5] = ref[4]  # two references with the same descriptor
    mov = noisy(ref[:5], rng, 0.05)
    mov[4] = ref[4]
    got = match_mutual(ref, mov, MatchConfig(min_similarity=-1, ratio=1.0))
    assert sorted(got.idx_mov.tolist()) == [0, 1, 2, 3]
    assert len(match_mutual(ref, mov, MatchConfig(min_similarity=-1))) == 5


def test_refine_keeps_keypoints_on_the_image_at_its_last_pixel():
    """A keypoint on the last column/row whose best neighbour lies outside the image is moved
    to the image's last pixel centre, not beyond it (nor short of it)."""
    from sarreg.features import local_offsets
    from sarreg.matching import refine_keypoints

    rng = np.random.default_rng(13)
    ref_desc = unit(rng, 2)
    offsets = local_offsets(2)
    local = unit(rng, 2 * 25).reshape(2, 25, 32)
    k = int(np.flatnonzero((offsets == [2, 2]).all(axis=1))[0])
    local[0, k], local[1, k] = ref_desc[0], ref_desc[1]
    for shape in ((80, 100), (81, 101)):  # even and odd sizes
        h, w = shape
        mov = _features([[w - 1, 10], [10, h - 1]], unit(rng, 2), local.astype(np.float16),
                        offsets, shape=shape)  # fmt: skip
        ref = _features([[0, 0], [1, 1]], ref_desc)
        out = refine_keypoints(ref, mov, Matches(np.array([0, 1]), np.array([0, 1]), np.ones(2)))
        assert out.keypoints[0, 0] == w - 1 and out.keypoints[1, 1] == h - 1
        np.testing.assert_allclose([out.keypoints[0, 1], out.keypoints[1, 0]], [12, 12], atol=0.5)


def test_refine_of_many_matches_equals_refining_them_in_parts():
    """Each keypoint's refinement depends on its own match only: more matches than one block
    of the computation (1024) give the same positions as refining them in smaller sets."""
    from sarreg.features import local_offsets
    from sarreg.matching import refine_keypoints

    rng = np.random.default_rng(14)
    n = 2500
    offsets = local_offsets(1)
    ref = _features(rng.uniform(0, 1000, (n, 2)), unit(rng, n))
    local = unit(rng, n * 9).reshape(n, 9, 32).astype(np.float16)
    mov = _features(rng.uniform(5, 995, (n, 2)), unit(rng, n), local, offsets, shape=(1000, 1000))
    idx = rng.permutation(n)
    all_at_once = refine_keypoints(ref, mov, Matches(idx, idx, np.ones(n, np.float32)))
    moved = np.hypot(*(all_at_once.keypoints - mov.keypoints).T)
    assert np.mean(moved > 0.5) > 0.5  # the random neighbourhoods do move most keypoints
    for part in np.array_split(idx, 7):
        one = refine_keypoints(ref, mov, Matches(part, part, np.ones(len(part), np.float32)))
        np.testing.assert_array_equal(all_at_once.keypoints[part], one.keypoints[part])


def test_local_matching_with_no_candidate_in_reach_gives_no_matches():
    """A prior whose predictions fall far from every reference keypoint, with local
    descriptors: no candidate at all, so zero matches (consistent empty arrays, no error)."""
    rng = np.random.default_rng(11)
    ref_desc = unit(rng, 40)
    perm = rng.permutation(40)
    ref = _features(rng.uniform(10, 90, (40, 2)), ref_desc)
    mov = _with_local(rng, ref_desc, perm, 0.05, [1, 0])
    cfg = MatchConfig(min_similarity=-1, radius=5.0, local_radius=2)
    near = match_mutual(ref, mov, cfg, prior=lambda p: ref.keypoints[perm].astype(np.float64))
    assert len(near) == 40  # the same pair with a prior in reach: all matched
    far = match_mutual(ref, mov, cfg, prior=lambda p: p + 1000.0)
    assert len(far) == 0
    assert len(far.idx_ref) == len(far.idx_mov) == len(far.similarity) == 0


def test_subpixel_peak_on_the_smallest_grid():
    """refine_radius 1 (a 3 x 3 neighbourhood): the parabola through the centre and both
    neighbours, along each axis."""
    from sarreg.matching import _subpixel

    side = 3
    c = np.arange(side) - 1.0
    peak = np.array([-0.35, 0.25])
    sim = 1.0 - 0.1 * ((c[None, :] - peak[0]) ** 2 + (c[:, None] - peak[1]) ** 2)
    best = np.array([int(np.argmax(sim))])
    assert best[0] == 4  # the centre
    np.testing.assert_allclose(_subpixel(sim[None], best, side)[0], peak, atol=1e-6)
