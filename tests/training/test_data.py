"""Training data sources: real samples, multi-date grouping, one-line DataErrors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sarreg.errors import DataError
from sarreg.preprocess import PreprocessConfig
from sarreg.training.data import (
    PairGenerator,
    SourceConfig,
    load_source,
    validation_pairs,
)
from sarreg.training.synth import SynthConfig

SYNTH = SynthConfig()


def _opera_files(data_dir):
    return sorted((data_dir / "opera_rtc_s1").glob("*VH_cropped.tif"))


def test_single_scene_batches_have_the_documented_shapes(data_dir):
    src = load_source(SourceConfig(str(data_dir / "s1_vv_grd_db.tif")), 96, SYNTH)
    gen = PairGenerator([src], 96, SYNTH, PreprocessConfig())
    b = gen.batch(3, np.random.default_rng(0))
    assert b.image1.shape == (3, 1, 96, 96) and b.image2.shape == (3, 1, 96, 96)
    assert b.field.shape == (3, 96, 96, 2) and b.valid.shape == (3, 96, 96)
    assert b.valid.dtype.is_floating_point is False and b.valid.float().mean() > 0.3
    assert 0.0 <= float(b.image1.min()) and float(b.image1.max()) <= 1.0


def test_multidate_folder_groups_same_grid_dates(data_dir, tmp_path):
    for f in _opera_files(data_dir)[:2]:
        shutil.copy(f, tmp_path / f.name)
    src = load_source(SourceConfig(str(tmp_path), pairs=True, min_valid=0.3), 96, SYNTH)
    assert len(src.groups) == 1 and len(src.groups[0]) == 2
    gen = PairGenerator([src], 96, SYNTH, PreprocessConfig())
    pair = gen.sample(np.random.default_rng(0))
    assert pair.valid.any()
    # the NaN nodata of the OPERA strips is never valid ground truth
    assert not (pair.valid & ~pair.mask1).any()


def test_pairs_csv(data_dir, tmp_path):
    a, b = _opera_files(data_dir)[:2]
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"image1,image2\n{a},{b}\n")
    src = load_source(SourceConfig(str(csv), pairs=True, min_valid=0.3), 96, SYNTH)
    assert src.groups == [[0, 1]]


def test_validation_pairs_are_fixed_by_the_seed(data_dir):
    src = load_source(SourceConfig(str(data_dir / "s1_vv_grd_db.tif")), 96, SYNTH)
    a = validation_pairs([src], 2, 96, SYNTH, PreprocessConfig(), seed=3)
    b = validation_pairs([src], 2, 96, SYNTH, PreprocessConfig(), seed=3)
    c = validation_pairs([src], 2, 96, SYNTH, PreprocessConfig(), seed=4)
    assert np.array_equal(a[1].image2, b[1].image2)
    assert np.allclose(a[0].homography, b[0].homography)
    assert not np.allclose(a[0].homography, c[0].homography)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_source(SourceConfig(str(tmp_path / "nope")), 64, SYNTH)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no raster files"):
        load_source(SourceConfig(str(tmp_path / "empty")), 64, SYNTH)


def test_no_readable_image(tmp_path):
    (tmp_path / "broken.tif").write_text("not a raster")
    with pytest.raises(DataError, match="could be read") as err:
        load_source(SourceConfig(str(tmp_path)), 64, SYNTH)
    assert "\n" not in str(err.value)


def test_images_smaller_than_the_crop(data_dir):
    with pytest.raises(DataError, match="at least 512x512") as err:
        load_source(SourceConfig(str(data_dir / "s1_vv_grd_db.tif")), 512, SYNTH)
    assert "--crop" in str(err.value)


def test_pairs_requested_with_only_one_image(data_dir, tmp_path):
    f = _opera_files(data_dir)[0]
    shutil.copy(f, tmp_path / f.name)
    with pytest.raises(DataError, match="at least two images on the same grid"):
        load_source(SourceConfig(str(tmp_path), pairs=True), 64, SYNTH)
