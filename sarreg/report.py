"""Registration report: JSON-safe conversion, atomic JSON report, diagnostic PNG plot.

The plot uses matplotlib's object API with an explicit Agg canvas created inside
:func:`plot_registration`, so importing this module does nothing and never changes the global
pyplot backend.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sarreg.atomic import atomic_write, check_output_path, write_json_atomic
from sarreg.gctools import gc_paused

log = logging.getLogger(__name__)

#: Most match lines drawn in the plot (inliers first, then outliers).
MAX_LINES = 300
#: Longest side (pixels) an image is shown at; larger images are decimated for display.
MAX_DISPLAY = 2048


def _is_affine(obj: Any) -> bool:
    return type(obj).__name__ == "Affine" and hasattr(obj, "to_gdal")


def _is_crs(obj: Any) -> bool:
    return hasattr(obj, "to_wkt") and hasattr(obj, "to_epsg")


def _crs_string(crs: Any) -> str:
    """``"EPSG:<code>"`` when the CRS has an EPSG authority code, else its WKT."""
    try:
        epsg = crs.to_epsg()
    except Exception:  # any lookup failure: fall back to WKT
        epsg = None
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


_PLAIN = (str, int, bool)


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` recursively into plain JSON types (dict, list, str, int, float, bool, None).

    - dataclass instances -> dict of their fields; mappings -> dict with ``str`` keys;
      tuples/lists/sets -> lists;
    - numpy arrays -> nested lists; numpy scalars -> Python scalars;
    - non-finite floats (NaN, inf) -> ``None`` (strict JSON has no NaN);
    - rasterio/affine ``Affine`` -> ``[a, b, c, d, e, f]`` (rasterio order, ``Affine(*v)``
      rebuilds it); CRS -> ``"EPSG:<code>"`` or WKT;
    - paths -> ``str``; enums -> their value; dates/times -> ISO 8601;
    - anything else -> ``str(obj)`` (a report should never fail on an odd value).
    """
    kind = type(obj)  # exact built-in types first: a report holds thousands of them
    if kind is float:
        return obj if math.isfinite(obj) else None
    if obj is None or kind in _PLAIN:
        return obj
    if kind is list:
        return [to_jsonable(v) for v in obj]
    if kind is dict:
        return {k if type(k) is str else str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (bool, str, int)):  # subclasses (e.g. IntEnum) as they are
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if _is_affine(obj):
        return [float(v) for v in tuple(obj)[:6]]
    if _is_crs(obj):
        return _crs_string(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    return str(obj)


def write_report(
    report: Mapping[str, Any], path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write ``report`` as indented, strict JSON (via :func:`to_jsonable`) atomically (the
    garbage collector paused: :func:`sarreg.gctools.gc_paused`)."""
    with gc_paused():
        return write_json_atomic(to_jsonable(report), path, overwrite=overwrite)


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Checkerboard mosaic of two same-shape images.

    Args:
        a, b: (H, W) arrays.
        tiles: number of tiles along each axis; row ``r`` is in tile row ``r * tiles // H``.

    Returns:
        (H, W) array of ``np.result_type(a, b)``: tile ``(i, j)`` (row, column) comes from ``a``
        where ``i + j`` is even, from ``b`` where it is odd.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"checkerboard needs two (H, W) arrays of one shape: {a.shape}, {b.shape}")
    if tiles < 1:
        raise ValueError(f"tiles must be >= 1, got {tiles}")
    h, w = a.shape
    ti = (np.arange(h) * tiles) // max(h, 1)
    tj = (np.arange(w) * tiles) // max(w, 1)
    use_a = ((ti[:, None] + tj[None, :]) % 2) == 0
    return np.where(use_a, a, b).astype(np.result_type(a, b), copy=False)


def _display(img: np.ndarray, max_side: int = MAX_DISPLAY) -> tuple[np.ndarray, int]:
    """Decimate ``img`` (H, W) by an integer step so its longest side <= ``max_side``."""
    step = max(1, math.ceil(max(img.shape) / max_side))
    return np.asarray(img, dtype=np.float32)[::step, ::step], step


def _to_display_xy(xy: np.ndarray, step: int) -> np.ndarray:
    """Pixel centres of the full image -> pixel centres of the image decimated by ``step``."""
    return (xy + 0.5) / step - 0.5


def _pick(idx: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``idx``, evenly spread (deterministic)."""
    if len(idx) <= n:
        return idx
    return idx[np.linspace(0, len(idx) - 1, n).round().astype(int)]


def side_by_side(ref_img, mov_img, kp_ref: np.ndarray, kp_mov: np.ndarray):
    """The plot's left panel: reference and moving image (each decimated by :func:`_display`)
    side by side with a gap, top-aligned, NaN elsewhere, and the keypoints in its pixels.

    Args:
        ref_img, mov_img: ``(H, W)`` and ``(h, w)`` images.
        kp_ref, kp_mov: ``(N, 2)`` x, y pixel centres in each image.

    Returns:
        ``(pair (rows, cols) float32, p_ref (N, 2), p_mov (N, 2), (ref_d, s_ref))``: the panel,
        both keypoint sets in its pixel centres, and the decimated reference with its step.
    """
    ref_d, s_ref = _display(ref_img)
    mov_d, s_mov = _display(mov_img)
    gap = max(4, ref_d.shape[1] // 50)
    height = max(ref_d.shape[0], mov_d.shape[0])
    pair = np.full((height, ref_d.shape[1] + gap + mov_d.shape[1]), np.nan, np.float32)
    pair[: ref_d.shape[0], : ref_d.shape[1]] = ref_d
    x_off = ref_d.shape[1] + gap
    pair[: mov_d.shape[0], x_off:] = mov_d
    p_ref = _to_display_xy(kp_ref, s_ref)
    p_mov = _to_display_xy(kp_mov, s_mov) + [x_off, 0]
    return pair, p_ref, p_mov, (ref_d, s_ref)


def lines_drawn(inliers: np.ndarray, max_lines: int = MAX_LINES) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the matches the plot draws: ``(inliers, outliers)``, at most ``max_lines``
    in all and up to a quarter of them outliers (more when there are too few inliers to fill
    the rest), each evenly spread over the matches (:func:`_pick`).

    Args:
        inliers: ``(N,)`` bool, True for RANSAC inliers.
    """
    inliers = np.asarray(inliers, dtype=bool).reshape(-1)
    n_in, n_out = int(inliers.sum()), int((~inliers).sum())
    n_out_drawn = min(n_out, max_lines // 4)  # keep some outliers visible
    n_in_drawn = min(n_in, max_lines - n_out_drawn)
    n_out_drawn = min(n_out, max_lines - n_in_drawn)
    return (_pick(np.flatnonzero(inliers), n_in_drawn),
            _pick(np.flatnonzero(~inliers), n_out_drawn))  # fmt: skip


def plot_registration(
    ref_img: np.ndarray,
    mov_img: np.ndarray,
    warped_img: np.ndarray | None,
    kp_ref: np.ndarray,
    kp_mov: np.ndarray,
    inliers: np.ndarray,
    out_png: str | os.PathLike,
    checker: int = 8,
    overwrite: bool = True,
    title: str | None = None,
) -> Path:
    """Write a diagnostic PNG of a registration (:func:`registration_figure`).

    Args:
        ref_img, mov_img, warped_img, kp_ref, kp_mov, inliers, checker, title: as
            :func:`registration_figure`.
        out_png: output path (checked first, written atomically).

    Returns:
        The absolute output path.
    """
    final = check_output_path(out_png, overwrite=overwrite)
    fig = registration_figure(ref_img, mov_img, warped_img, kp_ref, kp_mov, inliers, checker,
                              title)  # fmt: skip
    with atomic_write(final, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote plot %s", final)
    return final


def registration_figure(
    ref_img: np.ndarray,
    mov_img: np.ndarray,
    warped_img: np.ndarray | None,
    kp_ref: np.ndarray,
    kp_mov: np.ndarray,
    inliers: np.ndarray,
    checker: int = 8,
    title: str | None = None,
):
    """The diagnostic figure of a registration (a matplotlib ``Figure`` with an Agg canvas).

    Left: reference and moving image side by side with the matches as lines (inliers green,
    outliers faint red; at most :data:`MAX_LINES` lines, up to a quarter of them outliers, evenly
    sampled) and the drawn inliers' keypoints as yellow dots, the axes showing exactly the
    panel. Nodata (NaN) and padding are shown in dark blue. Right: checkerboard of the
    reference and the warped moving image (or the reference alone if ``warped_img`` is None).

    Args:
        ref_img: (H, W) float in [0, 1] (NaN shown as background).
        mov_img: (h, w) float in [0, 1].
        warped_img: (H, W) moving image resampled onto the reference grid, or None.
        kp_ref, kp_mov: (N, 2) matched x, y pixel centres in ``ref_img`` / ``mov_img``
            (row k of each is one match).
        inliers: (N,) bool, True for RANSAC inliers.
        checker: checkerboard tiles along each axis.
        title: the figure's title, or None.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    kp_ref = np.asarray(kp_ref, dtype=np.float64).reshape(-1, 2)
    kp_mov = np.asarray(kp_mov, dtype=np.float64).reshape(-1, 2)
    inliers = np.asarray(inliers, dtype=bool).reshape(-1)
    if not len(kp_ref) == len(kp_mov) == len(inliers):
        raise ValueError(
            f"kp_ref, kp_mov and inliers differ in length: "
            f"{len(kp_ref)}, {len(kp_mov)}, {len(inliers)}"
        )

    pair, p_ref, p_mov, (ref_d, s_ref) = side_by_side(ref_img, mov_img, kp_ref, kp_mov)

    in_idx, out_idx = lines_drawn(inliers)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=(0.15, 0.2, 0.35))  # nodata / padding

    fig = Figure(figsize=(14, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax_l, ax_r = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    ax_l.imshow(pair, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for idx, color, alpha, lw in ((out_idx, "red", 0.3, 0.5), (in_idx, "lime", 0.6, 0.5)):
        if len(idx):
            segs = np.stack([p_ref[idx], p_mov[idx]], axis=1)
            ax_l.add_collection(LineCollection(segs, colors=color, alpha=alpha, linewidths=lw))
    if len(in_idx):
        pts = np.concatenate([p_ref[in_idx], p_mov[in_idx]])
        ax_l.scatter(pts[:, 0], pts[:, 1], s=3, c="yellow", linewidths=0)
    ax_l.set_title(
        f"reference | moving: {int(inliers.sum())} inliers of {len(inliers)} matches"
        f" (drawn {len(in_idx)} + {len(out_idx)})"
    )
    ax_l.set_xlim(-0.5, pair.shape[1] - 0.5)
    ax_l.set_ylim(pair.shape[0] - 0.5, -0.5)
    ax_l.set_axis_off()

    if warped_img is not None:
        warped = np.asarray(warped_img, dtype=np.float32)
        if warped.shape != np.shape(ref_img):
            raise ValueError(
                f"warped_img shape {warped.shape} differs from ref_img {np.shape(ref_img)}"
            )
        board = checkerboard(ref_d, warped[::s_ref, ::s_ref], checker)
        ax_r.set_title(f"checkerboard reference / warped ({checker}x{checker})")
    else:
        board = ref_d
        ax_r.set_title("reference (no warped image)")
    ax_r.imshow(board, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax_r.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Building the registration report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ImageEntry:
    """What the report says of one input: its file and metadata (``sarreg.io.RasterInfo``),
    the coarse pass's raster (``sarreg.io.Raster``) and its keypoint count."""

    path: str
    info: Any
    raster: Any
    keypoints: int

    def to_dict(self) -> dict:
        info = self.info
        return {
            "path": self.path,
            "shape": list(info.shape),
            "band": self.raster.band,
            "kind": self.raster.kind,
            "work_decimation": float(self.raster.decimation),
            "keypoints": int(self.keypoints),
            "nonfinite_pixels": int(getattr(self.raster, "nonfinite", 0)),
            "crs": crs_text(info.crs),
            "geotransform": list(info.transform)[:6] if info.transform is not None else None,
        }


def crs_text(crs) -> str | None:
    """``EPSG:<code>`` or WKT of a CRS, None without one."""
    return crs.to_string() if crs is not None else None


def tie_point_entries(tie, fit, gcp_idx, ref_transform, mov_transform) -> list[dict]:
    """One report entry per tie point: pixel (and map) positions, similarity, scores, inlier
    flag, residual of the final fit, tile, whether written as a GCP."""
    from sarreg import geometry

    xy_ref, xy_mov = tie.xy_ref, tie.xy_mov
    inl = np.asarray(fit.inliers, dtype=bool)
    is_gcp = np.zeros(len(tie), dtype=bool)
    if gcp_idx is not None:
        is_gcp[gcp_idx] = True
    map_ref = geometry.pixel_to_map(ref_transform, xy_ref) if ref_transform is not None else None
    map_mov = geometry.pixel_to_map(mov_transform, xy_mov) if mov_transform is not None else None
    # columns as Python lists first (one conversion per column, not per value)
    cols = {
        "ref_px": np.asarray(xy_ref, np.float64).tolist(),
        "mov_px": np.asarray(xy_mov, np.float64).tolist(),
        "similarity": np.asarray(tie.similarity, np.float64).tolist(),
        "score_ref": np.asarray(tie.score_ref, np.float64).tolist(),
        "score_mov": np.asarray(tie.score_mov, np.float64).tolist(),
        "inlier": inl.tolist(),
        "residual_px": np.asarray(fit.residuals, np.float64).tolist(),
        "tile": np.asarray(tie.tile).astype(int).tolist(),
        "gcp": is_gcp.tolist(),
    }
    if map_ref is not None:
        cols["ref_map"] = np.asarray(map_ref, np.float64).tolist()
    if map_mov is not None:
        cols["mov_map"] = np.asarray(map_mov, np.float64).tolist()
    names = list(cols)
    with gc_paused():  # thousands of acyclic dicts (sarreg.gctools)
        return [dict(zip(names, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def transform_entry(fit, config, ref_info, mov_info, prior_full) -> dict:
    """The report's ``transform``: pixel matrix (and mapping), scale, rotation, where the
    moving centre lands, the corrected geotransform and the georeferencing shift."""
    from sarreg import geometry
    from sarreg.config import transform_model

    def forward(xy: np.ndarray) -> np.ndarray:
        if fit.mapping is not None:
            return fit.mapping.forward(xy)
        return geometry.apply_matrix(fit.matrix, xy)

    scale, rotation = geometry.matrix_scale_rotation(fit.matrix)
    info: dict = {
        "model": fit.model,
        "pixel_matrix": fit.matrix.tolist(),
        "pixel_matrix_convention": "moving pixel centre (x, y, 1) -> reference pixel centre, "
        "full resolution, top-left pixel centre at (0, 0)",
        "scale": scale,
        "rotation_deg": rotation,
    }
    if fit.mapping is not None:
        info["pixel_matrix_note"] = (
            f"least-squares affine approximation of the {fit.model} mapping over its inliers"
        )
        info["mapping"] = fit.mapping.to_dict()
    h, w = mov_info.shape
    centre = np.array([[(w - 1) / 2.0, (h - 1) / 2.0]])
    info["moving_centre_to_reference_px"] = forward(centre)[0].tolist()
    if ref_info.transform is not None:
        if transform_model(config.estimate.transform).geotransform:
            new_t = geometry.corrected_geotransform(ref_info.transform, fit.matrix)
            info["corrected_geotransform"] = list(new_t)[:6]
            info["corrected_geotransform_gdal"] = list(new_t.to_gdal())
        if prior_full is not None:
            predicted = prior_full(centre)[0]
            found = forward(centre)[0]
            shift_px = found - predicted
            XY = geometry.pixel_to_map(ref_info.transform, np.stack([predicted, found]))
            info["georeferencing_shift_at_centre"] = {
                "ref_px": shift_px.tolist(),
                "map_units": (XY[1] - XY[0]).tolist(),
                "map_distance": float(np.hypot(*(XY[1] - XY[0]))),
            }
    return info


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux: ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_report(
    *,
    version: str,
    ref: ImageEntry,
    mov: ImageEntry,
    output: str | None,
    tie,
    fit,
    gcp_idx,
    loaded,
    config,
    timings: Mapping[str, float],
    prior_full,
    coarse: dict | None,
    tiles: list[dict],
    pyramid: dict,
    tile_grid: dict | None = None,
) -> dict:
    """The JSON report of a registration: transform, tie points, per-tile residuals, quality
    figures, timings, provenance.

    ``tie``/``fit``: the final tie points (``sarreg.estimate.TiePoints``, full-resolution
    pixel centres) and fit; ``prior_full``: the georeferencing prior (moving -> reference
    full-res pixels), or None when either image is not georeferenced; ``gcp_idx``: tie points
    written as GCPs, or None; ``coarse``: the coarse pass's entry when tiles followed it (None
    for a coarse-only registration); ``tiles``: tile records or residual regions.
    """
    inl = np.asarray(fit.inliers, dtype=bool)
    n_gcps = 0 if gcp_idx is None else int(len(np.unique(gcp_idx)))
    return {
        "sarreg_version": version,
        "reference": ref.to_dict(),
        "moving": mov.to_dict(),
        "output": output,
        "mode": config.output.mode,
        "transform": transform_entry(fit, config, ref.info, mov.info, prior_full),
        "matches": int(len(tie)),
        "inliers": int(inl.sum()),
        "inlier_ratio": float(inl.mean()) if len(inl) else 0.0,
        "rmse_px": float(fit.rmse),
        "threshold_px": float(fit.threshold),
        "loo_rmse_px": float(fit.loo_rmse),
        "used_georeferencing_prior": bool(prior_full is not None and config.estimate.use_prior),
        "windowed": coarse is not None and coarse.get("tiles_used", 0) > 0,
        "coarse": coarse,
        "tiles": tiles,
        "tile_grid": tile_grid,
        "pyramid": pyramid,
        "gcps_written": n_gcps,
        "crs": crs_text(ref.info.crs),
        "model": {
            "path": str(getattr(loaded, "path", "")),
            "arch": loaded.arch,
            "kwargs": dict(loaded.kwargs),
            "sha256": getattr(loaded, "sha256", None),
        },
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "settings": dataclasses.asdict(config),
        "tie_points": tie_point_entries(tie, fit, gcp_idx, ref.info.transform, mov.info.transform),
    }


def plot_coarse(path, coarse, fit, warp_overlay: bool) -> None:
    """Matches of the coarse pass at its resolution and a checkerboard of the reference with
    the moving image warped by ``fit.matrix`` (the affine approximation for the non-linear
    models; ``warp_overlay`` False: the reference alone)."""
    from sarreg.errors import SarregError
    from sarreg.estimate import work_to_full

    warped = None
    if warp_overlay:
        try:
            import cv2

            # warp the preprocessed moving image at coarse resolution for the overlay
            mw = np.linalg.inv(work_to_full(coarse.ref)) @ fit.matrix @ work_to_full(coarse.mov)
            warped = cv2.warpPerspective(
                coarse.img_mov, mw, (coarse.img_ref.shape[1], coarse.img_ref.shape[0]),
                flags=cv2.INTER_LINEAR,
            )  # fmt: skip
        except SarregError:
            warped = None
    plot_registration(
        coarse.img_ref,
        coarse.img_mov,
        warped,
        coarse.feat_ref.keypoints[coarse.matches.idx_ref],
        coarse.feat_mov.keypoints[coarse.matches.idx_mov],
        coarse.work_inliers,
        path,
    )
