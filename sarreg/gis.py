"""GIS outputs of a registration beyond the aligned image: shift raster and tie-point quality map.

* :func:`write_shifts` (``--shifts shifts.tif``): a two-band float32 GeoTIFF on a coarse grid of
  the reference (cells of ``cell`` x ``cell`` reference pixels, same CRS, geotransform scaled
  by ``cell``). At each cell centre ``p = (x, y)`` (reference pixel centre coordinates, top-left
  pixel centre at (0, 0)), the fitted model takes the moving pixel centre ``q`` to ``p``
  (``q = model^-1(p)``); band 1 ``dx_px = q_x - p_x`` and band 2 ``dy_px = q_y - p_y``: the
  displacement in pixels that the resampling applies, where the moving image's content at
  that place was found.
* :func:`plot_quality` (written with ``--plot``, as ``<plot>_quality.png``): the reference with
  the tie points coloured by their residual against the fitted model (inliers as dots,
  outliers as crosses) and a histogram of the residuals with the RANSAC threshold.

Both are written atomically (:mod:`sarreg.atomic`) and belong to a registration's output group:
:func:`extra_outputs` lists their paths so that they are checked before any work.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarreg.errors import ConfigError

if TYPE_CHECKING:  # numpy is imported where used: validate() runs before any pixel work
    import numpy as np

log = logging.getLogger(__name__)

#: Side of a shift-raster cell in reference pixels.
SHIFT_CELL = 32
SHIFT_SUFFIXES = (".tif", ".tiff")
QUALITY_SUFFIX = "_quality"


def quality_plot_path(plot: str | os.PathLike) -> str:
    """``matches.png`` -> ``matches_quality.png`` (the tie-point quality map of ``--plot``)."""
    p = Path(plot)
    return str(p.with_name(f"{p.stem}{QUALITY_SUFFIX}{p.suffix or '.png'}"))


def extra_outputs(config: Any) -> list[str]:
    """Paths of this module's outputs for a registration's
    :class:`~sarreg.config.OutputConfig`."""
    paths = []
    if config.shifts:
        paths.append(str(config.shifts))
    if config.plot:
        paths.append(quality_plot_path(config.plot))
    return paths


def validate(config: Any) -> None:
    """Reject a ``--shifts`` path of an :class:`~sarreg.config.OutputConfig` that is not a
    GeoTIFF name (ConfigError)."""
    shifts = config.shifts
    if shifts and Path(shifts).suffix.lower() not in SHIFT_SUFFIXES:
        raise ConfigError(
            f"the shift raster {shifts} must be a GeoTIFF", "name the --shifts file *.tif"
        )


def shift_field(
    shape: tuple[int, int], inverse: Callable[[np.ndarray], np.ndarray], cell: int = SHIFT_CELL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Displacements of a model on a coarse grid of the reference.

    Args:
        shape: reference ``(height, width)`` in pixels.
        inverse: (N, 2) reference pixel centres -> (N, 2) moving pixel centres (the fitted
            model's inverse).
        cell: cell side in reference pixels.

    Returns:
        ``(dx, dy, centres)``: ``(rows, cols)`` float32 arrays ``q - p`` with
        ``rows = ceil(height / cell)``, ``cols = ceil(width / cell)``, and the ``(rows, cols,
        2)`` cell centres ``p`` (reference pixel centre coordinates, x then y).
    """
    import numpy as np

    h, w = shape
    rows, cols = math.ceil(h / cell), math.ceil(w / cell)
    xs = np.arange(cols) * cell + (cell - 1) / 2.0
    ys = np.arange(rows) * cell + (cell - 1) / 2.0
    gx, gy = np.meshgrid(xs, ys)
    p = np.stack([gx.ravel(), gy.ravel()], axis=1)
    q = np.asarray(inverse(p), dtype=np.float64).reshape(-1, 2)
    d = (q - p).reshape(rows, cols, 2)
    return d[..., 0].astype(np.float32), d[..., 1].astype(np.float32), p.reshape(rows, cols, 2)


def model_inverse(fit: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Reference px -> moving px of a fit (its mapping's inverse, or the inverted matrix)."""
    import numpy as np

    if getattr(fit, "mapping", None) is not None:
        return fit.mapping.inverse
    from sarreg import geometry

    inv = np.linalg.inv(np.asarray(fit.matrix, dtype=np.float64))
    return lambda xy: geometry.apply_matrix(inv, xy)


def write_shifts(
    path: str | os.PathLike,
    ref_shape: tuple[int, int],
    ref_transform: Any,
    ref_crs: Any,
    inverse: Callable[[np.ndarray], np.ndarray],
    cell: int = SHIFT_CELL,
    overwrite: bool = False,
) -> Path:
    """Write the shift raster (module docstring) of a model; returns the output path.

    ``ref_transform``/``ref_crs``: the reference's geotransform and CRS (None for a plain pixel
    grid: the raster then has the grid's pixel coordinates scaled by ``cell`` and no CRS).
    """
    import rasterio
    from affine import Affine

    from sarreg.atomic import atomic_write, check_output_path

    final = check_output_path(path, overwrite=overwrite)
    dx, dy, _ = shift_field(ref_shape, inverse, cell)
    base = ref_transform if ref_transform is not None else Affine.identity()
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 2,
        "width": dx.shape[1],
        "height": dx.shape[0],
        "transform": base @ Affine.scale(cell),
        "compress": "deflate",
        "nodata": float("nan"),
    }
    if ref_crs is not None:
        profile["crs"] = ref_crs
    with atomic_write(final, overwrite=overwrite) as tmp:
        import warnings

        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dst = rasterio.open(tmp, "w", **profile)
        with dst:
            dst.write(dx, 1)
            dst.write(dy, 2)
            dst.set_band_description(1, "dx_px")
            dst.set_band_description(2, "dy_px")
            dst.update_tags(
                SARREG_SHIFTS=(
                    "moving pixel centre minus reference pixel centre that the fitted model "
                    f"maps onto it, at the centres of {cell} x {cell} px cells of the reference"
                ),
                CELL_PX=str(cell),
            )
    log.info("wrote shift raster %s (%d x %d cells)", final, dx.shape[1], dx.shape[0])
    return final


def plot_quality(
    path: str | os.PathLike,
    ref_img: np.ndarray,
    work_to_full: np.ndarray,
    xy_ref: np.ndarray,
    residuals: np.ndarray,
    inliers: np.ndarray,
    threshold: float,
    overwrite: bool = False,
) -> Path:
    """Tie-point quality map and residual histogram, as a PNG (written atomically).

    Args:
        ref_img: (H, W) preprocessed reference at work resolution, values in [0, 1].
        work_to_full: 3x3 matrix from work-resolution to full-resolution reference pixels.
        xy_ref: (N, 2) full-resolution reference pixel centres of the tie points.
        residuals: (N,) distance to the fitted model in reference pixels.
        inliers: (N,) bool.
        threshold: RANSAC threshold in reference pixels (drawn on the histogram).
    """
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sarreg import geometry
    from sarreg.atomic import atomic_write, check_output_path

    final = check_output_path(path, overwrite=overwrite)
    xy = geometry.apply_matrix(np.linalg.inv(work_to_full), np.asarray(xy_ref).reshape(-1, 2))
    res = np.asarray(residuals, dtype=np.float64).reshape(-1)
    inl = np.asarray(inliers, dtype=bool).reshape(-1)
    vmax = max(float(threshold), 1e-6)

    fig = Figure(figsize=(13, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax_map, ax_hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=(0.15, 0.2, 0.35))
    ax_map.imshow(np.asarray(ref_img, np.float32), cmap=cmap, vmin=0, vmax=1)
    sc = None
    for mask, marker, size in ((~inl, "x", 14), (inl, "o", 10)):
        if mask.any():
            sc = ax_map.scatter(
                xy[mask, 0], xy[mask, 1], c=np.minimum(res[mask], vmax), cmap="plasma",
                vmin=0, vmax=vmax, s=size, marker=marker, linewidths=0.8,
            )  # fmt: skip
    if sc is not None:
        fig.colorbar(sc, ax=ax_map, fraction=0.04, label="residual (reference px)")
    ax_map.set_title(
        f"tie points by residual: {int(inl.sum())} inliers (dots), {int((~inl).sum())} "
        "outliers (crosses)"
    )
    ax_map.set_axis_off()
    if len(res):
        top = max(float(np.percentile(res, 99)), 2 * vmax)
        bins = np.linspace(0, top, 40)
        ax_hist.hist(np.minimum(res[inl], top), bins=bins, color="tab:green", label="inliers")
        ax_hist.hist(np.minimum(res[~inl], top), bins=bins, color="tab:red", alpha=0.6,
                     label="outliers")  # fmt: skip
        rmse = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else float("nan")
        ax_hist.set_title(f"residuals (inlier RMSE {rmse:.2f} px)")
    ax_hist.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:g} px")
    ax_hist.set_xlabel("residual (reference px)")
    ax_hist.set_ylabel("tie points")
    ax_hist.legend()
    fig.tight_layout()
    with atomic_write(final, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote tie-point quality map %s", final)
    return final


def write_outputs(
    config: Any,
    ref_info: Any,
    fit: Any,
    ref_img: np.ndarray,
    work_to_full: np.ndarray,
    xy_ref: np.ndarray,
    written: list[str],
) -> None:
    """Write the shift raster and the quality map a registration's
    :class:`~sarreg.config.OutputConfig` asks for.

    Each path written is appended to ``written`` at once, so that the caller removes it again
    when a later output fails (outputs go as a group). ``ref_info``: the reference's
    :class:`~sarreg.io.RasterInfo`; ``fit``: the final fit (``matrix``/``mapping``,
    ``residuals``, ``inliers`` and the ``threshold`` that defined them, drawn on the quality
    map's histogram); ``ref_img``/``work_to_full``/``xy_ref``: see :func:`plot_quality`.
    """
    if config.shifts:
        write_shifts(
            config.shifts, ref_info.shape, ref_info.transform, ref_info.crs, model_inverse(fit),
            overwrite=config.overwrite,
        )  # fmt: skip
        written.append(str(config.shifts))
    if config.plot:
        path = quality_plot_path(config.plot)
        plot_quality(
            path, ref_img, work_to_full, xy_ref, fit.residuals, fit.inliers,
            fit.threshold, overwrite=config.overwrite,
        )  # fmt: skip
        written.append(path)
