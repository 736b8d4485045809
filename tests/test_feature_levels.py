"""Pyramid-level geometry of sarreg.features on non-square images, without a network: the
pixel-centre conventions (x, y) between an ``(H, W)`` input and an ``(H_s, W_s)`` level, the
level and context sizes, the pyramid and the tiling."""

from __future__ import annotations

import numpy as np

from sarreg.features import (
    ExtractConfig,
    Features,
    context_shape,
    input_to_level,
    level_shape,
    level_to_input,
    local_offsets,
    pyramid_scales,
    resize_level,
    tile_spans,
)

SHAPE, SHAPE_S = (300, 200), (75, 100)  # (H, W): y shrinks by 4, x by 2


def test_level_and_input_centres_on_a_non_square_image():
    """Level pixel (x, y) = (0, 0) covers input columns 0..1 and rows 0..3: centre (0.5, 1.5);
    the mapping back is its inverse."""
    np.testing.assert_allclose(level_to_input([[0.0, 0.0]], SHAPE, SHAPE_S), [[0.5, 1.5]])
    np.testing.assert_allclose(input_to_level([[0.5, 1.5]], SHAPE, SHAPE_S), [[0.0, 0.0]])
    np.testing.assert_allclose(input_to_level([[199.5, 299.5]], SHAPE, SHAPE_S), [[99.5, 74.5]])
    xy = np.random.default_rng(0).uniform(-0.5, 199.5, (50, 2))
    back = level_to_input(input_to_level(xy, SHAPE, SHAPE_S), SHAPE, SHAPE_S)
    np.testing.assert_allclose(back, xy, atol=1e-9)
    assert input_to_level(xy, SHAPE, SHAPE_S).dtype == np.float64


def test_level_shape_rounds_and_never_vanishes():
    assert level_shape((300, 201), 0.5) == (150, 100)  # round(100.5) -> 100 (half to even)
    assert level_shape((301, 203), 0.5) == (150, 102)
    assert level_shape((3, 5), 0.01) == (1, 1)


def test_context_shape_is_the_level_times_the_context_scale_at_least_two_pixels():
    # keypoints found at scale 1/2 (inv_scale 2): context at 0.5 of that level = 1/4 input
    assert context_shape((400, 240), 0.5, 2.0) == (100, 60)
    assert context_shape((400, 240), 0.5, np.float32(2.0)) == (100, 60)
    assert context_shape((8, 12), 0.5, 4.0) == (2, 2)  # 1 x 2 -> at least 2 x 2
    assert context_shape((16, 12), 0.5, 4.0) == (2, 2)


def test_pyramid_keeps_the_levels_whose_long_side_fits():
    cfg = ExtractConfig(scales=None, max_scale=1.0, min_scale=0.25, scale_factor=2.0,
                        min_size=100, max_size=600)  # fmt: skip
    assert pyramid_scales((400, 800), cfg) == [0.5, 0.25]  # 800 px > max_size
    assert pyramid_scales((400, 600), cfg) == [1.0, 0.5, 0.25]  # limits inclusive
    assert pyramid_scales((200, 400), cfg) == [1.0, 0.5, 0.25]  # 100 px = min_size kept
    assert pyramid_scales((190, 380), cfg) == [1.0, 0.5]  # 95 px < min_size
    # nothing fits: the closest level (here the largest, 80 px against 100) is used
    assert pyramid_scales((40, 80), cfg) == [1.0]
    # nothing fits from above: the smallest level (2000 px against 600) is closest
    assert pyramid_scales((4000, 8000), cfg) == [0.25]
    assert pyramid_scales((10, 10), ExtractConfig(scales=(0.5, 1, 0.75))) == [1.0, 0.75, 0.5]


def test_tiles_cover_the_axis_with_even_starts_and_the_overlap():
    assert tile_spans(256, 256, 40) == [(0, 256, 0, 256)]
    spans = tile_spans(1001, 256, 41)  # overlap rounded up to 42, core 256 - 84 = 172
    assert spans[0] == (0, 172, 0, 214)
    assert spans[1] == (172, 344, 130, 386)
    assert spans[-1][1] == spans[-1][3] == 1001
    assert all(c1 - c0 == 172 for c0, c1, _, _ in spans[:-1])
    assert tile_spans(1000, 255, 40)[0] == (0, 174, 0, 214)  # odd core 175 -> 174
    for size, tile, ov in ((257, 256, 0), (999, 128, 17), (5000, 512, 64)):
        spans = tile_spans(size, tile, ov)
        cores = [(a, b) for a, b, _, _ in spans]
        assert cores[0][0] == 0 and cores[-1][1] == size
        assert all(b == c for (_, b), (c, _) in zip(cores[:-1], cores[1:], strict=True))
        assert all(t1 - t0 <= tile and t0 % 2 == 0 and c0 % 2 == 0 for c0, _, t0, t1 in spans)


def test_resized_mask_is_eroded_so_no_level_pixel_sees_outside():
    img = np.ones(SHAPE, np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[:, :100] = True  # the left half is valid
    img_s, mask_s = resize_level(img, mask, SHAPE_S)
    assert img_s.shape == mask_s.shape == SHAPE_S and mask_s.dtype == bool
    assert mask_s[:, :49].all() and not mask_s[:, 49:].any()  # one level column eroded
    same_img, same_mask = resize_level(img, mask, SHAPE)
    assert same_img is img and same_mask is mask


def test_local_offsets_are_row_major_dx_dy():
    off = local_offsets(1)
    assert off.dtype == np.float32 and off.shape == (9, 2)
    np.testing.assert_array_equal(
        off[[0, 1, 3, 4, 8]], [[-1, -1], [0, -1], [-1, 0], [0, 0], [1, 1]]
    )


def test_resized_mask_is_eroded_one_level_pixel_on_every_side():
    img = np.ones((200, 200), np.float32)
    mask = np.zeros((200, 200), bool)
    mask[40:160, 40:160] = True  # a valid square, level pixels 20..79 at half size
    _, mask_s = resize_level(img, mask, (100, 100))
    rows, cols = np.nonzero(mask_s)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (21, 78, 21, 78)


def test_features_without_a_shape_record_it_as_unknown(tmp_path):
    """``image_shape`` (0, 0) means unknown: the default, and what a file without it reads as."""
    f = Features(np.zeros((1, 2), np.float32), np.ones(1, np.float32), np.ones(1, np.float32),
                 np.ones((1, 4), np.float32))  # fmt: skip
    assert f.image_shape == (0, 0)
    np.savez(tmp_path / "old.npz", keypoints=np.zeros((1, 3), np.float32),
             descriptors=np.ones((1, 4), np.float32), scores=np.ones(1, np.float32))  # fmt: skip
    assert Features.from_npz(tmp_path / "old.npz").image_shape == (0, 0)
    assert Features.empty(4, (30, 20)).image_shape == (30, 20)
