"""Write the registered moving image: resampled onto the reference grid, or re-georeferenced.

Two output modes:

- :func:`resample_to_grid` (``--mode resample``): the moving image is interpolated onto the
  reference image's pixel grid (same CRS, transform, width and height), block by block with
  bounded memory.
- :func:`write_georeferenced` (``--mode georef``): the moving pixels are copied unchanged and the
  file gets a corrected geotransform (affine models) or ground control points (homography).

Conventions (see docs/architecture.md): pixel coordinates ``(x, y)`` are pixel *centres* with the
top-left centre at ``(0, 0)``; rasterio affines map pixel *corners*; the 3x3 matrix ``M`` maps
moving pixel centres to reference pixel centres, ``[x_ref, y_ref, 1]^T ~ M @ [x_mov, y_mov, 1]^T``.
``cv2.remap`` uses the same centre convention (integer map value = pixel centre).

All outputs are tiled (256x256), deflate-compressed GeoTIFFs written through
:func:`sarreg.atomic.atomic_write`, so nothing half-written ever appears at the output path.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from tqdm import tqdm

from sarreg.atomic import atomic_write, check_output_path
from sarreg.errors import (
    BandError,
    ConfigError,
    DegenerateTransformError,
    InputFileError,
    NotGeoreferencedError,
)

log = logging.getLogger(__name__)

#: Output GeoTIFF tile size (pixels); processing blocks are multiples of it.
TILE = 256
#: Tag (default namespace) recording how sarreg produced a file; value is a JSON object.
REGISTRATION_TAG = "SARREG_REGISTRATION"
#: Largest moving-image window side read for one block (cv2.remap needs < 32767).
_MAX_WINDOW_SIDE = 16384
#: Largest moving-image window (pixels) read for one block; bigger blocks are split.
_MAX_WINDOW_PIXELS = 1 << 24
#: Extra moving pixels read around a block's footprint (cubic taps + mask dilation need 3).
_MARGIN = 3
#: cv2.remap's sub-pixel resolution (INTER_TAB_SIZE): positions are snapped to 1/32 pixel.
_SUBPIXEL = 32
#: Dataset tags not copied to outputs (TIFF/GDAL structural ones, stale for the new file).
_SKIP_TAG_PREFIXES = ("TIFFTAG_", "AREA_OR_POINT", REGISTRATION_TAG)

_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class GridSpec:
    """A raster pixel grid: what an output must match to overlay the reference image.

    ``transform`` is the rasterio affine of pixel *corners*; ``crs`` is None for an image without
    georeferencing (then ``transform`` is the identity).
    """

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"grid size must be positive, got {self.width}x{self.height}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (int(self.height), int(self.width))


@dataclass(frozen=True)
class WarpResult:
    """What :func:`resample_to_grid` / :func:`write_georeferenced` wrote."""

    path: Path
    width: int
    height: int
    dtype: str
    nodata: float | None
    valid_fraction: float  # fraction of output pixels holding data (not nodata)


def grid_of(path: str | os.PathLike) -> GridSpec:
    """The pixel grid (CRS, transform, size) of the raster at ``path``; no pixels are read."""
    with _open(path) as src:
        return GridSpec(crs=src.crs, transform=src.transform, width=src.width, height=src.height)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike) -> rasterio.DatasetReader:
    """Open a raster for reading with :func:`sarreg.io.open_raster` (``/vsi*`` paths too)."""
    from sarreg.io import open_raster

    return open_raster(path)


def _check_band(src: rasterio.DatasetReader, band: int) -> None:
    if not 1 <= int(band) <= src.count:
        raise BandError(
            f"band {band} does not exist in {src.name} (it has {src.count})",
            f"pass a band between 1 and {src.count}",
        )


def _read(src: rasterio.DatasetReader, band: int, window: Window) -> np.ndarray:
    """Read one band window, turning GDAL read errors into :class:`InputFileError`."""
    try:
        return src.read(band, window=window)
    except RasterioError as err:
        raise InputFileError(
            f"cannot read {src.name} ({err})", "check that the file is complete and not corrupt"
        ) from err


def _as_matrix(matrix: Any) -> np.ndarray:
    """Validate a 3x3 pixel transform; returns it as float64 (3, 3)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise DegenerateTransformError(
            f"the pixel transform must be a finite 3x3 matrix, got shape {m.shape}",
            "check the transform estimation",
        )
    scale = np.abs(m[:2, :2]).max()
    if scale == 0 or abs(np.linalg.det(m)) <= 1e-12 * max(scale, abs(m[2, 2])) ** 3:
        raise DegenerateTransformError(
            "the pixel transform is singular", "try another transform model or more matches"
        )
    return m


def _inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of ``m`` (reference px centre -> moving px centre), scaled so ``[2, 2]`` > 0.

    With that scaling, reference pixels whose homogeneous ``w`` is <= 0 lie beyond the
    homography's horizon and have no moving pixel.
    """
    inv = np.linalg.inv(m)
    if abs(inv[2, 2]) > 1e-12:
        inv = inv / inv[2, 2]
    return inv


def _numpy_dtype(name: str) -> np.dtype:
    """numpy dtype of a band (GDAL's complex integers as complex floats)."""
    from sarreg.io import numpy_dtype

    return numpy_dtype(name)


def _output_dtype_nodata(dtype: str, nodata: float | None) -> tuple[np.dtype, float | None]:
    """Output dtype and nodata for a moving band of ``dtype`` with nodata value ``nodata``.

    Complex -> float32 amplitude with NaN nodata. Otherwise the dtype is kept, and so is the
    nodata value; without one, floats get NaN, and integers get ``None``: no nodata value, the
    validity goes into an internal GDAL mask band instead, so that real zeros (common in
    display-scaled uint8 products) stay valid data.
    """
    from sarreg.io import numpy_dtype

    dt = numpy_dtype(dtype)
    if dt.kind == "c":
        return np.dtype(np.float32), math.nan
    if nodata is not None:
        return dt, float(nodata)
    return dt, (math.nan if dt.kind == "f" else None)


def _check_nodata(value: float, dtype: np.dtype) -> float:
    """``value`` if ``dtype`` can hold it exactly, else :class:`ConfigError`."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        ok = not math.isnan(value) and value == int(value) and info.min <= value <= info.max
    else:
        ok = not math.isfinite(value) or abs(value) <= float(np.finfo(dtype).max)
    if not ok:
        raise ConfigError(
            f"nodata {value} cannot be stored in {dtype.name}",
            f"choose a nodata value within the {dtype.name} range",
        )
    return value


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """Float type interpolation runs in (exact for the source's values)."""
    if dtype.kind in "iu" and dtype.itemsize <= 2 or dtype == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _valid_mask(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    """(h, w) bool, True where ``arr`` holds data: finite and not equal to ``nodata``."""
    valid = np.isfinite(arr) if arr.dtype.kind in "fc" else np.ones(arr.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        valid &= arr != nodata
    return valid


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast interpolated floats to ``dtype``; integers are rounded and clipped to the range."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def _predictor(dtype: np.dtype) -> int:
    """TIFF predictor: 2 (horizontal differencing) for integers, 3 for floats, 1 otherwise."""
    if dtype.kind in "iu":
        return 2
    if dtype.kind == "f":
        return 3
    return 1


def _gtiff_profile(dtype: np.dtype, width: int, height: int, nodata: float | None) -> dict:
    """Creation profile: single band, 256x256 tiles, deflate, BIGTIFF=IF_SAFER."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": 1,
        "dtype": dtype.name,
        "width": int(width),
        "height": int(height),
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "predictor": _predictor(dtype),
        "BIGTIFF": "IF_SAFER",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def _copy_metadata(src: rasterio.DatasetReader, band: int, dst: Any, extra: dict) -> None:
    """Copy dataset tags (minus structural ones), band tags/description/unit; add ``extra``."""
    tags = {
        k: v for k, v in src.tags().items() if not any(k.startswith(p) for p in _SKIP_TAG_PREFIXES)
    }
    tags[REGISTRATION_TAG] = json.dumps(extra, separators=(",", ":"))
    dst.update_tags(**tags)
    band_tags = src.tags(band)
    if band_tags:
        dst.update_tags(1, **band_tags)
    desc = src.descriptions[band - 1]
    if desc:
        dst.set_band_description(1, desc)
    unit = src.units[band - 1]
    if unit:
        dst.set_band_unit(1, unit)


@contextlib.contextmanager
def _gtiff_or_cog(tmp: Path, cog: bool, resampling: str) -> Iterator[Path]:
    """Path to write the tiled GeoTIFF to; with ``cog``, converted into ``tmp`` on exit.

    A Cloud-Optimized GeoTIFF (GDAL's COG driver: 256 x 256 tiles, deflate, internal
    overviews down to one tile, nearest-neighbour overviews for ``resampling='nearest'``,
    averages otherwise) is made from a plain GeoTIFF written next to ``tmp``, which is removed
    again whatever happens. Metadata, GCPs and the mask band are copied by GDAL.
    """
    if not cog:
        yield tmp
        return
    plain = tmp.with_name(tmp.name + ".plain.tif")
    try:
        yield plain
        from rasterio.shutil import copy as gdal_copy

        gdal_copy(
            str(plain), str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
            OVERVIEWS="IGNORE_EXISTING", BIGTIFF="IF_SAFER", PREDICTOR="YES",
            RESAMPLING="NEAREST" if resampling == "nearest" else "AVERAGE",
        )  # fmt: skip
    finally:
        for path in (plain, plain.with_name(plain.name + ".aux.xml")):
            with contextlib.suppress(OSError):
                path.unlink()


def _blocks(height: int, width: int, rows: int, cols: int) -> Iterator[Window]:
    """Row-major windows of at most ``rows`` x ``cols`` covering a ``height`` x ``width`` grid."""
    for r in range(0, height, rows):
        for c in range(0, width, cols):
            yield Window(c, r, min(cols, width - c), min(rows, height - r))


def _round_block(n: int) -> int:
    """Round a block size up to a whole number of output tiles (so each tile is written once)."""
    return max(TILE, -(-int(n) // TILE) * TILE)


def _source_coords(inv: np.ndarray, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moving pixel centres of the reference pixel centres in ``win``.

    Returns ``xs, ys`` float64 (h, w) and ``ok`` bool (h, w): False where the point has no
    finite moving position (beyond a homography's horizon).
    """
    cols = np.arange(win.col_off, win.col_off + win.width, dtype=np.float64)
    rows = np.arange(win.row_off, win.row_off + win.height, dtype=np.float64)
    x, y = np.meshgrid(cols, rows)
    xm = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
    ym = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
    if inv[2, 0] == 0 and inv[2, 1] == 0:  # affine
        return xm, ym, np.ones(xm.shape, dtype=bool)
    w = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
    ok = w > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        xs, ys = xm / w, ym / w
    ok &= np.isfinite(xs) & np.isfinite(ys)
    return xs, ys, ok


#: spacing (output pixels) of the nodes at which a non-linear mapping's inverse is evaluated;
#: positions in between are interpolated bilinearly (smooth mappings: error << 1/32 px)
MAPPING_STEP = 16


def mapping_source_coords(
    inverse: Callable[[np.ndarray], np.ndarray], win: Window, step: int = MAPPING_STEP
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`_source_coords` for a non-linear mapping's ``inverse`` (reference px
    ``(N, 2)`` -> moving px ``(N, 2)``, NaN where none; e.g. ``Mapping.inverse``).

    The inverse is evaluated on nodes at absolute multiples of ``step`` covering ``win`` and
    interpolated bilinearly in float64, so a pixel's position does not depend on the block
    layout. Returns ``xs, ys`` float64 (h, w) and ``ok`` bool (h, w).
    """
    c0, r0 = int(win.col_off), int(win.row_off)
    w, h = int(win.width), int(win.height)
    gx0, gy0 = (c0 // step) * step, (r0 // step) * step
    gx = np.arange(gx0, c0 + w + step, step, dtype=np.float64)
    gy = np.arange(gy0, r0 + h + step, step, dtype=np.float64)
    nodes = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    src = np.asarray(inverse(nodes), dtype=np.float64).reshape(len(gy), len(gx), 2)
    # separable bilinear interpolation: along x on the node rows, then along y
    ix, tx = _linear_index(np.arange(c0, c0 + w, dtype=np.float64), gx0, step, len(gx))
    iy, ty = _linear_index(np.arange(r0, r0 + h, dtype=np.float64), gy0, step, len(gy))
    ty = ty[:, None]
    bad = ~np.isfinite(src).all(axis=2)
    src = np.where(bad[..., None], 0.0, src)
    out = []
    for nodes in (src[..., 0], src[..., 1], bad.astype(np.float64)):
        rows = nodes[:, ix] * (1.0 - tx) + nodes[:, ix + 1] * tx  # (len(gy), w)
        out.append(rows[iy] * (1.0 - ty) + rows[iy + 1] * ty)
    ok = out[2] == 0  # no weight on a node without a position
    return out[0], out[1], ok


def _linear_index(pos: np.ndarray, origin: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left node index and weight of the right node, for positions on nodes
    ``origin + k * step``, ``k = 0 .. n - 1``."""
    f = (pos - origin) / step
    i = np.minimum(np.floor(f).astype(int), n - 2)
    return i, f - i


def _needed_window(
    xs: np.ndarray, ys: np.ndarray, ok: np.ndarray, width: int, height: int
) -> Window | None:
    """Moving-image window (with margin) covering the coordinates; None if all fall outside."""
    if not ok.any():
        return None
    xv, yv = xs[ok], ys[ok]
    x0 = max(0, math.floor(xv.min()) - _MARGIN)
    x1 = min(width, math.ceil(xv.max()) + _MARGIN + 1)
    y0 = max(0, math.floor(yv.min()) - _MARGIN)
    y1 = min(height, math.ceil(yv.max()) + _MARGIN + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return Window(x0, y0, x1 - x0, y1 - y0)


def _window_maps(
    xs: np.ndarray, ys: np.ndarray, ok: np.ndarray, need: Window, resampling: str
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps: window-relative moving pixel centres, float32 (H, W) each.

    Absolute coordinates are first snapped to cv2's 1/32-pixel interpolation grid (for nearest:
    to the nearest pixel centre, halves rounded up), so the maps are exact in float32 and a
    pixel's result does not depend on which block or window it was computed in. Points without
    a position (``~ok``) or far outside the window are moved just outside it (cv2's fixed point
    must not overflow).
    """
    maps = []
    for v, off, size in ((xs, need.col_off, need.width), (ys, need.row_off, need.height)):
        if resampling == "nearest":
            snapped = np.floor(v + 0.5)
        else:
            snapped = np.rint(v * _SUBPIXEL) / _SUBPIXEL
        rel = np.clip(snapped - off, -8, size + 8)
        maps.append(np.where(ok, rel, -8).astype(np.float32))
    return maps[0], maps[1]


def _remap_block(
    data: np.ndarray,
    invalid: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    resampling: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate one block.

    Args:
        data: (h, w) float window of the moving image, invalid pixels filled with 0.
        invalid: (h, w) bool, True where the window holds no data.
        mx, my: (H, W) float32 window-relative moving pixel centres of the output pixels, on the
            1/32-pixel grid (see :func:`_window_maps`); outside the window = outside the image.
        resampling: 'nearest' | 'bilinear' | 'cubic'.

    Returns:
        values (H, W) float and bad (H, W) bool: True where the interpolation gave a non-zero
        weight to an invalid or outside pixel.
    """
    values = cv2.remap(
        data, mx, my, _INTERP[resampling], borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    if resampling == "nearest":
        bad = cv2.remap(
            invalid.astype(np.uint8), mx, my, cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT, borderValue=1,
        )  # fmt: skip
        return values, bad > 0
    inv_f = invalid.astype(np.float32)
    if resampling == "bilinear":
        # bilinear weights are >= 0 and exactly 0 for the far tap at a whole-pixel position
        return values, _touched(inv_f, mx, my)
    # Cubic uses taps floor(x)-1..floor(x)+2 along an axis with a fractional position (all four
    # weights non-zero) and only floor(x) at a whole-pixel position (weights 0, 1, 0, 0). That is
    # exactly the bilinear footprint of the mask dilated by one pixel along the fractional axes.
    # Outside the window counts as invalid; the margin keeps that away from every used tap.
    frac_x = mx != np.floor(mx)
    frac_y = my != np.floor(my)
    bad = np.zeros(mx.shape, dtype=bool)
    for kx, ky in ((True, True), (True, False), (False, True), (False, False)):
        sel = (frac_x == kx) & (frac_y == ky)
        if not sel.any():
            continue
        kernel = np.ones((3 if ky else 1, 3 if kx else 1), np.uint8)
        dil = cv2.dilate(inv_f, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1.0)
        bad[sel] = _touched(dil, mx, my)[sel]
    return values, bad


def _touched(inv_f: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """(H, W) bool: bilinear interpolation of the invalid mask got a non-zero contribution."""
    touched = cv2.remap(
        inv_f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0
    )
    return touched > 1e-6


# --------------------------------------------------------------------------------------------
# resample mode
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """Everything the per-block worker needs (one open moving dataset, fixed for a call)."""

    src: rasterio.DatasetReader
    band: int
    inv: np.ndarray
    resampling: str
    src_nodata: float | None
    out_dtype: np.dtype
    out_nodata: float | None  # None: validity written to a mask band, outside pixels are 0
    work_dtype: np.dtype
    complex_src: bool
    mapping: Any = None  # non-linear mapping (sarreg.mapping); then ``inv`` is unused


def _warp_window(job: _Job, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """Output pixels for the reference-grid window ``win``.

    Returns ``out`` (H, W) of ``out_dtype`` (nodata where there is no data) and ``good``
    (H, W) bool, True where ``out`` holds data (also where that data equals the nodata value).
    Splits ``win`` in two (recursively) if the moving window it needs is too large.
    """
    if job.mapping is not None:
        xs, ys, ok = mapping_source_coords(job.mapping.inverse, win)
    else:
        xs, ys, ok = _source_coords(job.inv, win)
    need = _needed_window(xs, ys, ok, job.src.width, job.src.height)
    shape = (int(win.height), int(win.width))
    fill = 0 if job.out_nodata is None else job.out_nodata
    out = np.full(shape, fill, dtype=job.out_dtype)
    if need is None:
        return out, np.zeros(shape, dtype=bool)
    too_big = (
        max(need.width, need.height) > _MAX_WINDOW_SIDE
        or need.width * need.height > _MAX_WINDOW_PIXELS
    )
    if too_big and (win.width > 1 or win.height > 1):
        if win.height >= win.width:
            h = int(win.height) // 2
            parts = (Window(win.col_off, win.row_off, win.width, h),
                     Window(win.col_off, win.row_off + h, win.width, win.height - h))  # fmt: skip
            return _join([_warp_window(job, p) for p in parts], axis=0)
        w = int(win.width) // 2
        parts = (Window(win.col_off, win.row_off, w, win.height),
                 Window(win.col_off + w, win.row_off, win.width - w, win.height))  # fmt: skip
        return _join([_warp_window(job, p) for p in parts], axis=1)

    raw = _read(job.src, job.band, need)
    invalid = ~_valid_mask(raw, job.src_nodata)
    data = np.abs(raw) if job.complex_src else raw
    data = data.astype(job.work_dtype)
    data[invalid] = 0
    mx, my = _window_maps(xs, ys, ok, need, job.resampling)
    values, bad = _remap_block(data, invalid, mx, my, job.resampling)
    good = ~bad
    out[good] = _to_dtype(values[good], job.out_dtype)
    return out, good


def _join(parts: list[tuple[np.ndarray, np.ndarray]], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(out, good)`` pairs of split blocks along ``axis``."""
    return (
        np.concatenate([p[0] for p in parts], axis=axis),
        np.concatenate([p[1] for p in parts], axis=axis),
    )


def block_workers() -> int:
    """Threads that compute output blocks: OpenCV's thread count (``cv2.setNumThreads``,
    as a batch worker sets it), at least 1. The writer stays on the calling thread."""
    return max(1, int(cv2.getNumThreads()))


def _in_order(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``workers`` threads, results in the order of ``items``, with at
    most ``2 * workers`` items in flight (bounded memory). ``workers <= 1``: no thread. The
    first exception is raised in the caller; the items in flight are finished first."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sarreg-warp") as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(it, 2 * workers))
        try:
            while pending:
                result = pending.popleft().result()
                for item in it:
                    pending.append(pool.submit(fn, item))
                    break
                yield result
        finally:
            for fut in pending:
                fut.cancel()


class _PerThreadSource:
    """One open moving dataset per thread (a GDAL dataset must not be read from two threads
    at once); all closed by :meth:`close`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[rasterio.DatasetReader] = []

    def get(self) -> rasterio.DatasetReader:
        src = getattr(self._local, "src", None)
        if src is None:
            src = _open(self.path)
            self._local.src = src
            with self._lock:
                self._open.append(src)
        return src

    def close(self) -> None:
        with self._lock:
            for src in self._open:
                src.close()
            self._open.clear()


def resample_to_grid(
    src_path: str | os.PathLike,
    band: int,
    matrix: Any,
    grid: GridSpec,
    out_path: str | os.PathLike,
    resampling: str = "bilinear",
    overwrite: bool = False,
    block_rows: int = 512,
    progress: bool = False,
    block_cols: int | None = None,
    nodata: float | None = None,
    cog: bool = False,
    workers: int | None = None,
) -> WarpResult:
    """Resample band ``band`` of the moving image onto the reference ``grid`` and write it.

    Args:
        src_path: moving image (any GDAL raster).
        band: 1-based band of the moving image.
        matrix: (3, 3) pixel transform, moving pixel centres -> reference pixel centres, or a
            non-linear :class:`sarreg.mapping.Mapping` (anything with ``inverse(xy)``
            reference px -> moving px and ``to_dict()``), whose inverse is evaluated every
            ``MAPPING_STEP`` output pixels and interpolated in between.
        grid: the reference grid; the output gets exactly its CRS, transform, width, height.
        out_path: output GeoTIFF path (written atomically; checked before any work).
        resampling: 'nearest' | 'bilinear' | 'cubic'.
        overwrite: replace an existing output.
        block_rows, block_cols: output block size in pixels (rounded up to whole 256-px tiles;
            ``block_cols`` defaults to ``block_rows``). Memory is bounded by the block and the
            moving window it needs (blocks needing a window over 16 Mpx are split).
        progress: show a tqdm progress bar over blocks.
        nodata: output nodata value; default: the moving band's, else NaN (floats) / a mask
            band (integers). Valid pixels equal to it are counted and logged as a warning.
        cog: write a Cloud-Optimized GeoTIFF (tiled, internal overviews; GDAL's COG driver).
        workers: threads that compute blocks, each with its own open moving dataset, while
            the calling thread writes them in order (``None``: :func:`block_workers`; 1: all
            on the calling thread). The output does not depend on it.

    The moving dtype and nodata are kept (complex -> float32 amplitude with NaN nodata; a band
    without nodata gets NaN for floats; integers get an internal mask band instead). Output pixels
    that map outside the moving image, or whose interpolation gives non-zero weight to a moving
    nodata pixel (up to 2x2 taps for bilinear, 4x4 for cubic), are nodata. Integer outputs are
    rounded and clipped to the dtype's range (cubic overshoot). Sub-pixel positions are snapped
    to 1/32 pixel (cv2.remap's resolution), so results do not depend on the block size.

    Returns:
        A :class:`WarpResult` with the output path and the fraction of valid output pixels.
    """
    if resampling not in _INTERP:
        raise ConfigError(f"unknown resampling {resampling!r}", f"use one of {', '.join(_INTERP)}")
    mapping = matrix if hasattr(matrix, "inverse") else None
    m = None if mapping is not None else _as_matrix(matrix)
    final = check_output_path(out_path, overwrite=overwrite)
    inv = None if m is None else _inverse(m)
    rows = _round_block(block_rows)
    cols = _round_block(block_cols if block_cols is not None else block_rows)
    height, width = grid.shape

    with _open(src_path) as src:
        _check_band(src, band)
        src_dtype = _numpy_dtype(src.dtypes[band - 1])
        src_nodata = src.nodatavals[band - 1]
        out_dtype, out_nodata = _output_dtype_nodata(src_dtype.name, src_nodata)
        if nodata is not None:
            out_nodata = _check_nodata(float(nodata), out_dtype)
        job = _Job(
            src=src,
            band=band,
            inv=inv,
            resampling=resampling,
            src_nodata=src_nodata,
            out_dtype=out_dtype,
            out_nodata=out_nodata,
            work_dtype=_work_dtype(out_dtype),
            complex_src=src_dtype.kind == "c",
            mapping=mapping,
        )
        if src_nodata is None and nodata is None:
            log.info(
                "%s has no nodata value; the output marks pixels without data %s",
                src_path, "in a mask band" if out_nodata is None else f"with {out_nodata}",
            )  # fmt: skip
        profile = _gtiff_profile(out_dtype, width, height, out_nodata)
        if grid.crs is not None:
            profile.update(crs=grid.crs, transform=grid.transform)
        # else: a plain pixel grid (non-georeferenced reference): no CRS and no geotransform
        info = {
            "tool": f"sarreg {_version()}",
            "mode": "resample",
            "source": Path(src_path).name,
            "band": int(band),
            "resampling": resampling,
        }
        if m is not None:
            info["matrix"] = m.tolist()
            info["matrix_convention"] = "moving pixel centre -> reference pixel centre, (x, y)"
        else:
            info["mapping"] = mapping.to_dict().get("model", "non-linear")
        windows = list(_blocks(height, width, rows, cols))
        n_valid = n_clash = 0
        use_mask = out_nodata is None
        n_workers = block_workers() if workers is None else max(1, int(workers))
        n_workers = min(n_workers, len(windows))  # no thread without a block for it
        sources = _PerThreadSource(src_path)

        def warp_block(win: Window) -> tuple[np.ndarray, np.ndarray]:
            own = job if n_workers == 1 else replace(job, src=sources.get())
            return _warp_window(own, win)

        with (
            contextlib.closing(sources),
            atomic_write(final, overwrite=overwrite) as tmp,
            _gtiff_or_cog(tmp, cog, resampling) as target,
        ):
            with (
                rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
                rasterio.open(target, "w", **profile) as dst,
            ):
                _copy_metadata(src, band, dst, info)
                blocks = contextlib.closing(_in_order(warp_block, windows, n_workers))
                with blocks as computed:  # closed (threads joined) before the sources
                    for win, (block, good) in tqdm(
                        zip(windows, computed, strict=True), total=len(windows),
                        desc="warp", unit="block", disable=not progress,
                    ):  # fmt: skip
                        n_valid += int(good.sum())
                        if not use_mask and not math.isnan(out_nodata):
                            n_clash += int(np.count_nonzero(block[good] == out_nodata))
                        dst.write(block, 1, window=win)
                        if use_mask:
                            mask = np.where(good, 255, 0).astype(np.uint8)
                            dst.write_mask(mask, window=win)

    if n_clash:
        log.warning(
            "%d valid output pixels (%.1f%%) equal the nodata value %s and will read as nodata; "
            "pass another nodata value to keep them",
            n_clash, 100 * n_clash / float(width * height), out_nodata,
        )  # fmt: skip
    frac = n_valid / float(width * height)
    log.info("resampled %s onto a %dx%d grid -> %s (%.1f%% valid)",
             src_path, width, height, final, 100 * frac)  # fmt: skip
    return WarpResult(final, width, height, out_dtype.name, out_nodata, frac)


# --------------------------------------------------------------------------------------------
# georef mode
# --------------------------------------------------------------------------------------------


def _to_gcps(gcps: Any) -> list[GroundControlPoint]:
    """(x_mov, y_mov, X, Y) pixel-centre/map tuples -> rasterio GCPs (corner-based col/row).

    GDAL's GCP pixel/line refer to the corner-based grid (pixel (0, 0)'s top-left corner is
    0.0, its centre 0.5), so ``col = x_mov + 0.5`` and ``row = y_mov + 0.5``.
    """
    arr = np.asarray(gcps, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) < 3 or not np.all(np.isfinite(arr)):
        raise ConfigError(
            f"GCPs must be at least 3 finite (x_mov, y_mov, X, Y) rows, got shape {arr.shape}",
            "pass an (N, 4) list of pixel-centre and map coordinates",
        )
    return [
        GroundControlPoint(row=y + 0.5, col=x + 0.5, x=gx, y=gy, id=str(i + 1))
        for i, (x, y, gx, gy) in enumerate(arr.tolist())
    ]


def write_georeferenced(
    src_path: str | os.PathLike,
    band: int,
    out_path: str | os.PathLike,
    transform: Affine | None = None,
    crs: CRS | str | None = None,
    gcps: Sequence[Sequence[float]] | np.ndarray | None = None,
    overwrite: bool = False,
    cog: bool = False,
) -> WarpResult:
    """Copy band ``band`` of the moving image unchanged with new georeferencing (``--mode georef``).

    Exactly one of:
        transform: the corrected rasterio affine (pixel corners -> map), for affine models.
        gcps: (N, 4) rows ``(x_mov, y_mov, X, Y)``: moving pixel centres and their map
            coordinates in ``crs`` (homography); N >= 3. Written as GDAL GCPs whose pixel/line
            are corner-based, i.e. ``col = x_mov + 0.5``, ``row = y_mov + 0.5``.

    ``crs`` defaults to the moving image's CRS; one of the two is required. Dtype, nodata,
    tags and band description are kept; the output is tiled, deflate-compressed and written
    atomically; with ``cog`` a Cloud-Optimized GeoTIFF (internal overviews).
    """
    if (transform is None) == (gcps is None):
        raise ConfigError(
            "georef output needs exactly one of a transform or GCPs",
            "pass transform= for affine models or gcps= for a homography",
        )
    gcp_list = _to_gcps(gcps) if gcps is not None else None
    final = check_output_path(out_path, overwrite=overwrite)
    with _open(src_path) as src:
        _check_band(src, band)
        out_crs = CRS.from_user_input(crs) if crs is not None else src.crs
        if out_crs is None:
            raise NotGeoreferencedError(
                f"no CRS for the georeferenced output of {src_path}",
                "georeference the reference image or use --mode resample",
            )
        dtype = _numpy_dtype(src.dtypes[band - 1])  # CInt16 is written as CFloat32
        nodata = src.nodatavals[band - 1]
        profile = _gtiff_profile(dtype, src.width, src.height, nodata)
        info: dict[str, Any] = {
            "tool": f"sarreg {_version()}",
            "mode": "georef",
            "source": Path(src_path).name,
            "band": int(band),
        }
        if gcp_list is None:
            profile.update(crs=out_crs, transform=transform)
            info["transform"] = list(transform)[:6]
        else:
            info["gcps"] = len(gcp_list)
            info["gcp_convention"] = "GCP col/row = moving pixel centre + 0.5 (corner grid)"
        n_valid = 0
        with (
            atomic_write(final, overwrite=overwrite) as tmp,
            _gtiff_or_cog(tmp, cog, "bilinear") as target,
        ):
            with warnings.catch_warnings():
                # GCP outputs have no geotransform on purpose
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dst = rasterio.open(target, "w", **profile)
            with dst:
                if gcp_list is not None:
                    dst.gcps = (gcp_list, out_crs)
                _copy_metadata(src, band, dst, info)
                rows = cols = _round_block(1024)
                for win in _blocks(src.height, src.width, rows, cols):
                    block = _read(src, band, win)
                    n_valid += int(_valid_mask(block, nodata).sum())
                    dst.write(block, 1, window=win)

    frac = n_valid / float(src.width * src.height)
    log.info("wrote %s with %s", final, "GCPs" if gcp_list else "a corrected geotransform")
    return WarpResult(final, src.width, src.height, dtype.name, nodata, frac)


def _version() -> str:
    from sarreg import __version__

    return __version__
