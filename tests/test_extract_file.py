"""``sarreg extract`` (:func:`sarreg.pipeline.extract_file`): features of one image in the file's
own full-resolution pixels, however it was read, and an existing output kept unless told."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sarreg.errors import OutputExistsError
from sarreg.features import Features
from sarreg.pipeline import extract_file

DEMO = Path("data/demo")


@pytest.fixture(scope="module")
def doubled(tmp_path_factory):
    """The demo moving image (250 x 350) and a copy with every pixel repeated 2 x 2 (500 x 700,
    pixels half the size): read decimated by 2 (area average), the copy is the original."""
    tmp = tmp_path_factory.mktemp("doubled")
    with rasterio.open(DEMO / "moving.tif") as src:
        data, profile = src.read(1), src.profile
    big = np.repeat(np.repeat(data, 2, axis=0), 2, axis=1)
    profile.update(width=700, height=500, transform=profile["transform"] @ Affine.scale(0.5))
    path = tmp / "doubled.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(big, 1)
    return DEMO / "moving.tif", path


def test_features_of_a_decimated_read_are_in_the_files_full_resolution_pixels(doubled, tmp_path):
    """The 2 x 2 copy read decimated to 350 px gives the original's keypoints at the copy's
    pixel centres (x' = 2 x + 0.5) and twice their scales; the image shape is the copy's."""
    small, big = doubled
    f_small = extract_file(small, tmp_path / "small.npz")
    f_big = extract_file(big, tmp_path / "big.npz", max_size=350)
    assert len(f_small) > 100 and len(f_big) == len(f_small)
    np.testing.assert_allclose(f_big.keypoints, 2.0 * f_small.keypoints + 0.5, atol=1e-3)
    np.testing.assert_allclose(f_big.scales, 2.0 * f_small.scales, rtol=1e-6)
    np.testing.assert_array_equal(f_big.descriptors, f_small.descriptors)
    assert tuple(f_big.image_shape) == (500, 700) and tuple(f_small.image_shape) == (250, 350)
    saved = Features.from_npz(tmp_path / "big.npz")
    np.testing.assert_array_equal(saved.keypoints, f_big.keypoints)
    np.testing.assert_array_equal(saved.scales, f_big.scales)
    assert tuple(saved.image_shape) == (500, 700)


def test_an_image_of_exactly_max_size_is_read_as_it_is(doubled, tmp_path):
    """``max_size`` equal to the long side: no decimation (the same features as without it)."""
    small, _ = doubled
    f_free = extract_file(small, tmp_path / "a.npz")
    f_equal = extract_file(small, tmp_path / "b.npz", max_size=350)
    np.testing.assert_array_equal(f_equal.keypoints, f_free.keypoints)
    np.testing.assert_array_equal(f_equal.scales, f_free.scales)


def test_an_existing_output_is_kept_unless_overwrite(doubled, tmp_path):
    small, _ = doubled
    out = tmp_path / "f.npz"
    out.write_bytes(b"not features")
    with pytest.raises(OutputExistsError):
        extract_file(small, out)
    assert out.read_bytes() == b"not features"
    feats = extract_file(small, out, overwrite=True)
    assert len(Features.from_npz(out)) == len(feats)
