"""Raster input: read one band of any GDAL-readable SAR image into a :class:`Raster`.

Conventions (see ``docs/architecture.md``):

- Arrays are ``(H, W)``; ``data`` is ``float32`` in the units given by ``kind``
  (``'power'`` linear backscatter, ``'amplitude'`` linear magnitude/DN, ``'db'`` decibels,
  ``'display'`` already scaled for viewing, e.g. uint8 products), with invalid pixels set to 0;
  ``mask`` is ``bool`` ``(H, W)``, ``True`` = valid (not nodata / NaN / inf / masked).
- ``transform`` is the rasterio affine of *this array's* grid (window and decimation applied): it
  maps pixel **corners**, so the map position of pixel centre ``(x, y)`` is
  ``transform @ (x + 0.5, y + 0.5)`` (affine >= 3 spells the product ``@``).
- Pixel coordinates ``(x, y)`` are pixel centres with the top-left centre at ``(0, 0)``;
  :meth:`Raster.to_full_res` converts array pixel coordinates to the file's full-resolution grid.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import from_gcps
from rasterio.windows import Window

from sarreg.errors import BandError, ConfigError, EmptyImageError, InputFileError

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("power", "amplitude", "db", "display")
"""Value kinds a :class:`Raster` can hold."""

_DETECT_SAMPLE = 200_000  # valid values looked at by detect_kind (deterministic stride)
_STRIP_PIXELS = 2**24  # full-res pixels per strip when decimating complex data ourselves


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass
class Raster:
    """One band of a raster, read (possibly windowed and/or decimated) into memory.

    Attributes:
        data: ``(H, W)`` float32 in ``kind`` units; invalid pixels hold 0 (see ``mask``).
        mask: ``(H, W)`` bool, True = valid.
        kind: ``'power' | 'amplitude' | 'db' | 'display'``.
        transform: rasterio affine of this array's grid (pixel corners), or None when the file
            is not georeferenced.
        crs: coordinate reference system, or None.
        path: the file that was read.
        band: 1-based band index.
        full_shape: ``(H, W)`` of the file at full resolution.
        decimation: full-resolution pixels per array pixel (same on both axes; 1.0 = full res).
        window_offset: ``(col_off, row_off)`` of the read window in full-res pixels.
        nodata: the file's nodata value (None if not set; NaN possible).
        dtype: the source dtype name (e.g. ``'float32'``, ``'uint8'``, ``'complex64'``).
        nonfinite: pixels of the read that are NaN or +-inf without being the declared nodata
            (masked like nodata; scattered ones do not shrink the keypoint area).
        georef_source: ``'geotransform'``, ``'gcps'`` (affine fitted to ground control points)
            or ``'none'``.
    """

    data: np.ndarray
    mask: np.ndarray
    kind: str
    transform: Affine | None
    crs: CRS | None
    path: str
    band: int
    full_shape: tuple[int, int]
    decimation: float
    window_offset: tuple[int, int]
    nodata: float | None
    dtype: str
    georef_source: str = "none"
    nonfinite: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the in-memory array."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def georeferenced(self) -> bool:
        """True when the array has a map transform (a CRS may still be missing)."""
        return self.transform is not None

    def to_full_res(self, xy: np.ndarray) -> np.ndarray:
        """Map array pixel centres ``(N, 2)`` x, y to the file's full-res pixel centres.

        ``(xy + 0.5) * decimation - 0.5 + window_offset``.
        """
        pts = np.asarray(xy, dtype=np.float64)
        off = np.asarray(self.window_offset, dtype=np.float64)
        return (pts + 0.5) * self.decimation - 0.5 + off

    def from_full_res(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_full_res`: full-res pixel centres ``(N, 2)`` -> array pixels."""
        pts = np.asarray(xy, dtype=np.float64)
        off = np.asarray(self.window_offset, dtype=np.float64)
        return (pts - off + 0.5) / self.decimation - 0.5


@dataclass
class RasterInfo:
    """Metadata of a raster file (no pixels read).

    ``shape`` is ``(H, W)`` at full resolution; ``transform``/``crs`` are None when the file is
    not georeferenced; ``descriptions``/``units`` have one entry per band ('' when unset).
    """

    path: str
    shape: tuple[int, int]
    count: int
    dtype: str
    transform: Affine | None
    crs: CRS | None
    nodata: float | None
    descriptions: tuple[str, ...]
    units: tuple[str, ...]
    has_overviews: bool
    band: int = 1
    georef_source: str = "none"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def georeferenced(self) -> bool:
        """True when the file has a map transform."""
        return self.transform is not None

    def footprint_corners(self) -> np.ndarray | None:
        """Map coordinates ``(4, 2)`` of the image's outer corners, or None if not georeferenced.

        Order: top-left, top-right, bottom-right, bottom-left (outer pixel corners, i.e.
        ``transform @ (0, 0)``, ``@ (W, 0)``, ``@ (W, H)``, ``@ (0, H)``).
        """
        if self.transform is None:
            return None
        h, w = self.shape
        t = self.transform
        return np.array([t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Kind detection
# --------------------------------------------------------------------------------------------

_DB_RE = re.compile(r"(?<![a-z])(db|decibels?)(?![a-z])")
_AMP_RE = re.compile(r"amplitude|magnitude")
_POWER_RE = re.compile(
    r"(?<![a-z])(gamma0|sigma0|beta0|gamma_?naught|sigma_?naught|power|intensity)"
)
_IGNORED_TAG_PREFIXES = ("tiff", "area_or_point", "statistics_", "_")


def _metadata_kind(tags: Mapping[str, Any] | None) -> str | None:
    """Kind named by metadata text (dB first, then amplitude, then power), else None."""
    if not tags:
        return None
    texts = []
    for key, value in tags.items():
        k = str(key).lower()
        if k.startswith(_IGNORED_TAG_PREFIXES):
            continue
        v = str(value)
        if len(v) > 200:  # long XML/metadata blobs mention everything; ignore them
            continue
        texts.append(f"{k}={v.lower()}")
    text = " ".join(texts)
    if _DB_RE.search(text):
        return "db"
    if _AMP_RE.search(text):
        return "amplitude"
    if _POWER_RE.search(text):
        return "power"
    return None


#: GDAL complex integer types (Sentinel-1 SLC is CInt16) that numpy has no dtype for, and the
#: numpy dtype rasterio reads them as
_COMPLEX_INT = {"complex_int16": "complex64", "complex_int32": "complex128"}


def numpy_dtype(name: str | np.dtype) -> np.dtype:
    """numpy dtype of a rasterio band dtype name; CInt16/CInt32 (``'complex_int16'``,
    ``'complex_int32'``) map to the complex floats they are read as."""
    text = str(name)
    return np.dtype(_COMPLEX_INT.get(text, text))


def detect_kind(
    values: np.ndarray, dtype: str | np.dtype, tags: Mapping[str, Any] | None = None
) -> str:
    """Guess what a band's values are: ``'power' | 'amplitude' | 'db' | 'display'``.

    Args:
        values: valid (finite, not nodata) values of the band, any shape; for complex data
            either the complex values or their amplitude.
        dtype: the band's SOURCE dtype (before any conversion).
        tags: metadata text (band description, units, band/dataset tags); words such as
            ``dB``/``decibel`` -> db, ``amplitude``/``magnitude`` -> amplitude,
            ``gamma0``/``sigma0``/``beta0``/``power``/``intensity`` -> power.

    Rules after metadata: complex -> amplitude; uint8/bool -> display; other integers ->
    amplitude (DN); float with >= 5 % negative values within about [-60, 40] -> db; other
    float with many negatives -> display (linear scaling only); non-negative float with median
    < 2 -> power; larger -> amplitude.
    """
    dt = numpy_dtype(dtype)
    if dt.kind == "c":
        return "amplitude"
    from_meta = _metadata_kind(tags)
    if from_meta is not None:
        return from_meta
    if dt.kind == "b" or dt == np.uint8:
        return "display"
    if dt.kind in "iu":
        return "amplitude"
    v = np.asarray(values).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "power" if dt.kind == "f" else "amplitude"
    if v.size > _DETECT_SAMPLE:
        v = v[:: int(math.ceil(v.size / _DETECT_SAMPLE))]
    v = v.astype(np.float64)
    neg_frac = float(np.mean(v < 0))
    if neg_frac >= 0.05:
        lo, hi = np.percentile(v, [0.1, 99.9])
        if lo >= -65.0 and hi <= 45.0:
            return "db"
        logger.warning(
            "band has %.0f %% negative values outside the dB range; scaling it linearly "
            "('display'); pass kind= to override",
            100 * neg_frac,
        )
        return "display"
    return "power" if float(np.median(v)) < 2.0 else "amplitude"


# --------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """Open ``path`` for reading with rasterio, turning failures into :class:`InputFileError`.

    The one opener of every stage (read, metadata, warp): local files, GDAL virtual file
    systems (``/vsimem/``, ``/vsicurl/``, ``/vsizip/``...) and driver-prefixed names
    (``NETCDF:...``) alike.
    """
    p = str(path)
    local = Path(p)
    is_gdal_special = p.startswith(("/vsi", "<")) or ":" in p.split("/")[0]
    if not is_gdal_special and not local.exists():
        raise InputFileError(
            f"input file not found: {p} (the path does not exist)",
            "check the path (relative paths start at the current folder)",
        )
    if not is_gdal_special and local.is_dir():
        raise InputFileError(
            f"input path is a folder, not a raster file: {p}", "give an image file"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(p)
    except (RasterioIOError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(
            f"cannot read {p} as a raster ({first})",
            "give a GDAL-readable image such as a GeoTIFF, and check the file is complete",
        ) from exc


_open = open_raster  # the name used inside this module


def _check_band(ds: rasterio.io.DatasetReader, band: int, path: str) -> int:
    """Validate a 1-based band index against the dataset's band count."""
    try:
        b = int(band)
    except (TypeError, ValueError):
        raise BandError(f"band must be an integer, got {band!r}", "use --band 1..N") from None
    if b != band or not 1 <= b <= ds.count:
        raise BandError(
            f"band {band} does not exist in {path}, which has {ds.count} band(s)",
            f"choose --band between 1 and {ds.count}",
        )
    return b


def _georef(ds: rasterio.io.DatasetReader) -> tuple[Affine | None, CRS | None, str]:
    """Full-res transform, CRS and source ('geotransform' | 'gcps' | 'none') of a dataset.

    An identity transform with no CRS and no GCPs means "not georeferenced". A file with GCPs
    but no geotransform gets a least-squares affine fitted to its GCPs (approximate).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        transform = ds.transform
        crs = ds.crs
        gcps, gcp_crs = ds.gcps
    identity = transform is None or transform.almost_equals(Affine.identity())
    if not identity or crs is not None:
        return transform, crs, "geotransform"
    if gcps and len(gcps) >= 3:
        fitted = from_gcps(gcps)
        logger.info(
            "%s has no geotransform; using an affine fitted to its %d GCPs (approximate)",
            ds.name,
            len(gcps),
        )
        return fitted, gcp_crs, "gcps"
    return None, None, "none"


def _band_tags(ds: rasterio.io.DatasetReader, band: int) -> dict[str, str]:
    """Metadata text relevant to kind detection: description, units, band and dataset tags."""
    tags: dict[str, str] = {}
    tags.update({f"dataset:{k}": v for k, v in ds.tags().items()})
    tags.update({f"band:{k}": v for k, v in ds.tags(band).items()})
    desc = ds.descriptions[band - 1]
    unit = ds.units[band - 1] if ds.units else None
    if desc:
        tags["description"] = desc
    if unit:
        tags["units"] = unit
    return tags


def raster_info(path: str | Path, band: int = 1) -> RasterInfo:
    """Metadata of ``path`` (no pixel read). Raises InputFileError / BandError."""
    p = str(path)
    with _open(p) as ds:
        b = _check_band(ds, band, p)
        transform, crs, source = _georef(ds)
        return RasterInfo(
            path=p,
            shape=(int(ds.height), int(ds.width)),
            count=int(ds.count),
            dtype=str(ds.dtypes[b - 1]),
            transform=transform,
            crs=crs,
            nodata=ds.nodatavals[b - 1],
            descriptions=tuple(d or "" for d in ds.descriptions),
            units=tuple(u or "" for u in (ds.units or (None,) * ds.count)),
            has_overviews=bool(ds.overviews(b)),
            band=b,
            georef_source=source,
            tags=_band_tags(ds, b),
        )


# --------------------------------------------------------------------------------------------
# Windows and decimation
# --------------------------------------------------------------------------------------------


def _int_window(
    window: Window | tuple[int, int, int, int] | None, full_shape: tuple[int, int], path: str
) -> Window:
    """Integer window (clipped to the raster) from a Window or (col_off, row_off, width, height)."""
    h, w = full_shape
    if window is None:
        return Window(0, 0, w, h)
    if isinstance(window, Window):
        vals = (window.col_off, window.row_off, window.width, window.height)
    else:
        try:
            vals = tuple(window)
        except TypeError:
            vals = ()
        if len(vals) != 4:
            raise ConfigError(
                f"window must be (col_off, row_off, width, height), got {window!r}",
                "give four integers in full-resolution pixels",
            )
    c0, r0, ww, hh = (int(round(float(v))) for v in vals)
    if ww <= 0 or hh <= 0:
        raise ConfigError(f"window {vals} has no size", "give a positive width and height")
    c1, r1 = min(c0 + ww, w), min(r0 + hh, h)
    c0, r0 = max(c0, 0), max(r0, 0)
    if c1 <= c0 or r1 <= r0:
        raise ConfigError(
            f"window {vals} lies outside {path} ({w} x {h} pixels)",
            "give a window inside the image (col_off, row_off, width, height)",
        )
    if (c0, r0, c1 - c0, r1 - r0) != tuple(vals):
        logger.debug("window %s clipped to the raster: %s", vals, (c0, r0, c1 - c0, r1 - r0))
    return Window(c0, r0, c1 - c0, r1 - r0)


def _decimated_read_window(
    win: Window, max_size: int | None
) -> tuple[Window, tuple[int, int], float]:
    """Read window, output shape ``(h, w)`` and the (uniform) decimation factor.

    With decimation ``d = max(H, W) / max_size`` the output is ``max_size`` on the long side
    and ``floor(short / d)`` on the short side; the read window is ``out * d`` full-res pixels
    (fractional, the < d leftover pixels at the right/bottom edge are dropped), so both axes
    share exactly the same factor and :meth:`Raster.to_full_res` is exact.
    """
    h, w = int(win.height), int(win.width)
    if max_size is None or max(h, w) <= max_size:
        return win, (h, w), 1.0
    if int(max_size) < 1:
        raise ConfigError(f"max_size must be a positive integer, got {max_size}", "use e.g. 2000")
    d = max(h, w) / float(max_size)
    out_h = max(1, int(math.floor(h / d + 1e-9)))
    out_w = max(1, int(math.floor(w / d + 1e-9)))
    read = Window(win.col_off, win.row_off, min(w, out_w * d), min(h, out_h * d))
    return read, (out_h, out_w), d


def _area_mean_1d(a: np.ndarray, start: float, d: float, n_out: int, axis: int) -> np.ndarray:
    """Exact area-weighted sums of ``a`` over ``n_out`` bins of width ``d`` along ``axis``.

    Bin ``k`` covers ``[start + k d, start + (k + 1) d)`` in ``a``'s index units (pixel ``j``
    covers ``[j, j + 1)``), fractional pixels weighted by their overlap. Returns the SUMS
    (float64); divide by a count computed the same way for a (masked) mean.
    """
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    n = a.shape[-1]
    cum = np.zeros((*a.shape[:-1], n + 1), dtype=np.float64)
    np.cumsum(a, axis=-1, out=cum[..., 1:])
    edges = np.clip(start + d * np.arange(n_out + 1, dtype=np.float64), 0.0, float(n))
    idx = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    frac = edges - idx
    integral = cum[..., idx] + frac * a[..., idx]  # integral of a from 0 to each edge
    return np.moveaxis(np.diff(integral, axis=-1), -1, axis)


def _complex_amplitude_decimated(
    ds: rasterio.io.DatasetReader, band: int, read_win: Window, out_shape: tuple[int, int]
) -> np.ndarray:
    """Area-averaged amplitude ``|z|`` of a complex band, ``out_shape`` float32, NaN = no data.

    Amplitudes (not complex values, whose random speckle phases would cancel) are averaged
    over valid pixels (finite, non-zero), reading full-res strips to bound memory.
    """
    out_h, out_w = out_shape
    d = float(read_win.height) / out_h
    c0, r0 = float(read_win.col_off), float(read_win.row_off)
    col_lo = int(math.floor(c0))
    col_hi = min(ds.width, int(math.ceil(c0 + out_w * d)))
    rows_per_strip = max(1, int(_STRIP_PIXELS // max(1.0, (col_hi - col_lo) * d)))
    out = np.full(out_shape, np.nan, dtype=np.float32)
    for i0 in range(0, out_h, rows_per_strip):
        i1 = min(out_h, i0 + rows_per_strip)
        y0, y1 = r0 + i0 * d, r0 + i1 * d
        row_lo, row_hi = int(math.floor(y0)), min(ds.height, int(math.ceil(y1)))
        win = Window(col_lo, row_lo, col_hi - col_lo, row_hi - row_lo)
        amp = np.abs(ds.read(band, window=win, out_dtype=numpy_dtype(ds.dtypes[band - 1])))
        amp = amp.astype(np.float64)
        valid = np.isfinite(amp) & (amp > 0)
        amp[~valid] = 0.0
        sums = _area_mean_1d(amp, y0 - row_lo, d, i1 - i0, axis=0)
        sums = _area_mean_1d(sums, c0 - col_lo, d, out_w, axis=1)
        cnt = _area_mean_1d(valid.astype(np.float64), y0 - row_lo, d, i1 - i0, axis=0)
        cnt = _area_mean_1d(cnt, c0 - col_lo, d, out_w, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i0:i1] = np.where(cnt > 1e-9, sums / np.maximum(cnt, 1e-300), np.nan)
    return out


def _read_values(
    ds: rasterio.io.DatasetReader,
    band: int,
    read_win: Window,
    out_shape: tuple[int, int],
    decimated: bool,
) -> np.ndarray:
    """Read one band as float32 ``(h, w)``; complex -> amplitude; decimation = area average."""
    src_dtype = numpy_dtype(ds.dtypes[band - 1])
    is_complex = src_dtype.kind == "c"
    full = not decimated
    if is_complex and full:
        return np.abs(ds.read(band, window=read_win, out_dtype=src_dtype)).astype(np.float32)
    if is_complex:
        return _complex_amplitude_decimated(ds, band, read_win, out_shape)
    if full:
        return ds.read(band, window=read_win).astype(np.float32)
    return ds.read(
        band,
        window=read_win,
        out_shape=out_shape,
        resampling=Resampling.average,
        out_dtype="float32",
    ).astype(np.float32, copy=False)


def _valid_mask(
    ds: rasterio.io.DatasetReader,
    band: int,
    values: np.ndarray,
    read_win: Window,
    out_shape: tuple[int, int],
) -> np.ndarray:
    """True where a value is finite, not nodata and not masked by a GDAL mask/alpha band."""
    mask = np.isfinite(values)
    nodata = ds.nodatavals[band - 1]
    src_dtype = numpy_dtype(ds.dtypes[band - 1])
    if src_dtype.kind == "c":
        # SLC products fill outside the swath with 0 + 0j; a zero amplitude is never signal.
        mask &= values != 0
    elif nodata is not None and not math.isnan(nodata):
        mask &= values != np.float32(np.asarray(nodata).astype(src_dtype))
    flags = ds.mask_flag_enums[band - 1]
    if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
        m = ds.read_masks(band, window=read_win, out_shape=out_shape, resampling=Resampling.nearest)
        mask &= m > 0
    return mask


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _count_nonfinite(values: np.ndarray, nodata: float | None) -> int:
    """NaN/inf pixels that are not the declared nodata (NaN nodata: only the infinities)."""
    if nodata is not None and math.isnan(nodata):
        return int(np.isinf(values).sum())
    return int((~np.isfinite(values)).sum())


#: share of negative valid values above which ``--kind power``/``amplitude`` is doubted
_NEGATIVE_WARN = 0.01


def _warn_negative(values: np.ndarray, mask: np.ndarray, kind: str, path: str, band: int) -> None:
    """Warn when a band read as linear ``kind`` holds negative values (dB data, most likely):
    they are floored before the log and the registration degrades."""
    sample = values[mask][:: max(1, int(mask.sum()) // 200_000)]
    frac = float(np.mean(sample < 0)) if sample.size else 0.0
    if frac > _NEGATIVE_WARN:
        logger.warning(
            "%s band %d: %.1f %% of the valid values are negative, which linear %s cannot be "
            "(dB data?); they are floored before the log: pass --kind db (or auto) if so",
            path,
            band,
            100.0 * frac,
            kind,
        )


def read_raster(
    path: str | Path,
    band: int = 1,
    kind: str = "auto",
    max_size: int | None = None,
    window: Window | tuple[int, int, int, int] | None = None,
) -> Raster:
    """Read one band of a GDAL-readable raster.

    Args:
        path: file path (or GDAL path such as ``/vsizip/...``).
        band: 1-based band index.
        kind: ``'auto'`` (metadata, then values, see :func:`detect_kind`) or one of
            ``'power' | 'amplitude' | 'db' | 'display'``.
        max_size: if the (window's) larger side exceeds it, read decimated by
            ``d = larger_side / max_size`` (area average; GDAL uses overviews when present).
        window: rasterio ``Window`` or ``(col_off, row_off, width, height)`` in full-res
            pixels; clipped to the raster.

    Returns:
        A :class:`Raster`; ``data`` ``(h, w)`` float32 with invalid pixels 0, complex data as
        amplitude, scale/offset metadata applied.

    Raises:
        InputFileError: missing / unreadable / not a raster. BandError: band out of range.
        EmptyImageError: no valid pixel. ConfigError: bad ``kind``/``window``/``max_size``.
    """
    if kind != "auto" and kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}", f"use 'auto' or one of {', '.join(KINDS)}")
    p = str(path)
    with _open(p) as ds:
        b = _check_band(ds, band, p)
        full_shape = (int(ds.height), int(ds.width))
        win = _int_window(window, full_shape, p)
        read_win, out_shape, decimation = _decimated_read_window(win, max_size)
        try:
            values = _read_values(ds, b, read_win, out_shape, decimation != 1.0)
            mask = _valid_mask(ds, b, values, read_win, out_shape)
        except RasterioIOError as exc:
            raise InputFileError(
                f"cannot read pixels of {p} ({str(exc).splitlines()[0]})",
                "the file may be truncated or damaged; check it with gdalinfo",
            ) from exc
        scale, offset = ds.scales[b - 1], ds.offsets[b - 1]
        if (scale not in (None, 1.0)) or (offset not in (None, 0.0)):
            values = values * np.float32(scale or 1.0) + np.float32(offset or 0.0)
            logger.info("%s band %d: applied scale %s offset %s", p, b, scale, offset)
        transform_full, crs, source = _georef(ds)
        src_dtype = str(ds.dtypes[b - 1])
        nodata = ds.nodatavals[b - 1]
        tags = _band_tags(ds, b)

    nonfinite = _count_nonfinite(values, nodata)
    n_valid = int(mask.sum())
    if n_valid == 0:
        raise EmptyImageError(
            f"{p} band {b} has no valid pixels (all nodata)"
            + (" in the requested window" if window is not None else ""),
            "check --band/nodata or choose another file",
        )
    values[~mask] = 0.0
    if kind == "auto":
        kind = detect_kind(values[mask], src_dtype, tags)
        logger.info("%s band %d: detected kind %r", p, b, kind)
    elif kind in ("power", "amplitude"):
        _warn_negative(values, mask, kind, p, b)

    transform = None
    if transform_full is not None:
        transform = (
            transform_full
            @ Affine.translation(float(win.col_off), float(win.row_off))
            @ Affine.scale(decimation)
        )
    logger.debug(
        "read %s band %d: %s of %s, window %s, decimation %.4g, %.1f %% valid",
        p,
        b,
        values.shape,
        full_shape,
        (win.col_off, win.row_off, win.width, win.height),
        decimation,
        100.0 * n_valid / mask.size,
    )
    return Raster(
        data=values,
        mask=mask,
        kind=kind,
        transform=transform,
        crs=crs,
        path=p,
        band=b,
        full_shape=full_shape,
        decimation=float(decimation),
        window_offset=(int(win.col_off), int(win.row_off)),
        nodata=nodata,
        dtype=src_dtype,
        georef_source=source,
        nonfinite=nonfinite,
    )
