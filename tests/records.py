"""sarreg records that unit tests build by hand: raster metadata, a work-resolution read and a
fit of a known matrix, with the fields a test does not look at left empty."""

from __future__ import annotations

import numpy as np

from sarreg.geometry import TransformFit
from sarreg.io import Raster, RasterInfo


def raster_info(shape, transform=None, crs=None, path: str = "x.tif") -> RasterInfo:
    """Metadata of a one-band float32 file of ``shape`` ``(H, W)``."""
    return RasterInfo(path, shape, 1, "float32", transform, crs, None, ("",), ("",), False)


def work_raster(
    decimation: float = 1.0, offset: tuple[int, int] = (0, 0), shape=(8, 8), path: str = "x.tif"
) -> Raster:
    """A read of a 64 x 64 px file: ``shape`` pixels (zeros, all valid), each ``decimation``
    full-resolution pixels, from the window offset ``offset`` on."""
    return Raster(np.zeros(shape, np.float32), np.ones(shape, bool), "db", None, None, path, 1,
                  (64, 64), decimation, offset, None, "float32")  # fmt: skip


def fit_of(matrix, inliers=4, residuals=None, rmse: float = 0.0) -> TransformFit:
    """An affine fit of ``matrix`` (3x3) over ``inliers`` (a count, all inliers, or an
    ``(N,)`` bool array), with ``residuals`` ``(N,)`` (zeros by default)."""
    inl = np.ones(inliers, bool) if np.ndim(inliers) == 0 else np.asarray(inliers, bool)
    res = np.zeros(len(inl)) if residuals is None else np.asarray(residuals, float)
    return TransformFit("affine", np.asarray(matrix, float), inl, int(inl.sum()), rmse, rmse, res,
                        3.0)  # fmt: skip
