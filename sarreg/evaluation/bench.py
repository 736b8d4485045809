"""Benchmark format: pairs of images with a ground-truth mapping, read, written and validated.

A benchmark is a folder holding, per pair, a JSON file ``pair_XXXX.json``::

    {
      "name": "pair_0000",
      "reference": "pair_0000_ref.tif",      # paths relative to the JSON file's folder
      "moving": "pair_0000_mov.tif",
      "matrix": [[a, b, c], [d, e, f], [g, h, i]],   # moving px -> reference px, 3x3
      "model": "affine",                      # optional: transform model to estimate
      "tags": {"sensor": "umbra", "difficulty": "medium", ...}   # optional, free-form
    }

or, instead of ``matrix``, ``"displacement": "pair_0000_gt.tif"``: a 2-band float GeoTIFF on
the moving image's grid whose bands are ``dx``, ``dy`` with ``x_ref = x_mov + dx`` and
``y_ref = y_mov + dy`` at every moving pixel centre (NaN where there is no ground truth).

A benchmark can also be an index file (``.csv`` or ``.yaml``/``.yml``) listing the pairs. CSV
columns: ``name, reference, moving`` and either ``matrix`` (9 numbers, row-major, separated
by spaces) or ``displacement`` (path), optionally ``model`` and any other columns, which become
tags (e.g. ``sensor``, ``difficulty``). YAML: a list of pair mappings as in the JSON above, or a
mapping with that list under ``pairs``.

Coordinates follow docs/architecture.md: ``(x, y)`` pixel centres, top-left centre ``(0, 0)``.
An optional ``benchmark.yaml`` in the folder records how the benchmark was made.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sarreg.errors import BenchmarkError

log = logging.getLogger(__name__)

MODELS = ("translation", "similarity", "affine", "homography")
PAIR_GLOB = "pair_*.json"
META_NAME = "benchmark.yaml"


@dataclass
class BenchPair:
    """One benchmark pair (paths resolved, ground truth not yet loaded for dense fields).

    Attributes:
        name: pair identifier.
        reference, moving: image paths.
        matrix: ``(3, 3)`` float64 moving px -> reference px, or None with ``displacement``.
        displacement: path of the dense displacement GeoTIFF, or None.
        model: transform model to estimate, or None (the runner's default).
        tags: free-form tags (sensor, difficulty, source, ...).
    """

    name: str
    reference: Path
    moving: Path
    matrix: np.ndarray | None = None
    displacement: Path | None = None
    model: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def to_json(self, folder: Path) -> dict[str, Any]:
        """JSON-ready dict with paths relative to ``folder`` when inside it."""

        def rel(p: Path) -> str:
            try:
                return str(Path(p).resolve().relative_to(folder.resolve()))
            except ValueError:
                return str(p)

        out: dict[str, Any] = {"name": self.name, "reference": rel(self.reference)}
        out["moving"] = rel(self.moving)
        if self.matrix is not None:
            out["matrix"] = np.asarray(self.matrix, np.float64).tolist()
        if self.displacement is not None:
            out["displacement"] = rel(self.displacement)
        if self.model:
            out["model"] = self.model
        out["tags"] = dict(self.tags)
        return out


@dataclass
class GroundTruth:
    """Ground-truth mapping moving px -> reference px, from a matrix or a dense field.

    Attributes:
        matrix: ``(3, 3)`` float64, or None.
        field: ``(H_mov, W_mov, 2)`` float64 reference position of each moving pixel centre
            (NaN = none), or None.
    """

    matrix: np.ndarray | None = None
    field: np.ndarray | None = None

    def map(self, xy_mov: np.ndarray) -> np.ndarray:
        """Reference positions ``(N, 2)`` of moving points ``(N, 2)``; NaN where undefined."""
        pts = np.asarray(xy_mov, dtype=np.float64).reshape(-1, 2)
        if self.matrix is not None:
            from sarreg.geometry import apply_matrix

            if len(pts) == 0:
                return np.zeros((0, 2))
            with np.errstate(divide="ignore", invalid="ignore"):
                return apply_matrix(self.matrix, pts)
        assert self.field is not None
        return _bilinear(self.field, pts)

    def overlap_masks(
        self,
        ref_shape: tuple[int, int],
        mov_shape: tuple[int, int],
        ref_valid: np.ndarray | None = None,
        mov_valid: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the common area: ``(ref (H_r, W_r) bool, mov (H_m, W_m) bool)``.

        A moving pixel is in the overlap when its ground-truth position lies inside the
        reference image on a valid reference pixel and the moving pixel itself is valid; a
        reference pixel when some moving overlap pixel maps onto it (nearest, closed by 3x3).
        """
        hm, wm = mov_shape
        hr, wr = ref_shape
        ys, xs = np.mgrid[0:hm, 0:wm]
        xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        p = self.map(xy)
        ok = np.all(np.isfinite(p), axis=1)
        ok &= (p[:, 0] > -0.5) & (p[:, 0] < wr - 0.5) & (p[:, 1] > -0.5) & (p[:, 1] < hr - 0.5)
        ix = np.clip(np.rint(np.nan_to_num(p[:, 0])).astype(np.int64), 0, wr - 1)
        iy = np.clip(np.rint(np.nan_to_num(p[:, 1])).astype(np.int64), 0, hr - 1)
        if ref_valid is not None:
            ok &= ref_valid[iy, ix]
        mov = ok.reshape(hm, wm)
        if mov_valid is not None:
            mov &= mov_valid
        ref = np.zeros((hr, wr), np.uint8)
        sel = mov.ravel()
        ref[iy[sel], ix[sel]] = 1
        # a moving pixel covers more than one reference pixel when the mapping enlarges
        ref = cv2.morphologyEx(ref, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        if self.matrix is not None:  # exact footprint of the valid moving overlap
            warped = cv2.warpPerspective(
                mov.astype(np.uint8), np.asarray(self.matrix, np.float64), (wr, hr),
                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
            )  # fmt: skip
            ref = np.maximum(ref, warped)
        refm = ref.astype(bool)
        if ref_valid is not None:
            refm &= ref_valid
        return refm, mov


def _bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear sample of an ``(H, W, 2)`` field at points ``(N, 2)``; NaN outside / NaN taps."""
    h, w = field.shape[:2]
    if len(xy) == 0:
        return np.zeros((0, 2))
    x, y = xy[:, 0], xy[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1) & np.isfinite(x) & np.isfinite(y)
    xc = np.clip(np.nan_to_num(x), 0, w - 1)
    yc = np.clip(np.nan_to_num(y), 0, h - 1)
    x0 = np.minimum(np.floor(xc).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(yc).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (xc - x0)[:, None], (yc - y0)[:, None]
    out = (
        field[y0, x0] * (1 - fx) * (1 - fy)
        + field[y0, x1] * fx * (1 - fy)
        + field[y1, x0] * (1 - fx) * fy
        + field[y1, x1] * fx * fy
    )
    out[~inside] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# reading


def _matrix(value: Any, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BenchmarkError(
            f"{where}: ground-truth matrix is not numeric",
            "give a 3x3 list of numbers (moving px -> reference px)",
        ) from None
    if m.size == 9 and m.ndim == 1:
        m = m.reshape(3, 3)
    if m.shape != (3, 3):
        raise BenchmarkError(
            f"{where}: ground-truth matrix has shape {m.shape}, expected (3, 3)",
            "give a 3x3 matrix (moving px -> reference px), or 'displacement' with a 2-band "
            "GeoTIFF",
        )
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12 or m[2, 2] == 0:
        raise BenchmarkError(
            f"{where}: ground-truth matrix is singular or not finite",
            "give an invertible 3x3 matrix",
        )
    return m / m[2, 2]


def _pair_from_mapping(d: dict[str, Any], folder: Path, where: str) -> BenchPair:
    if not isinstance(d, dict):
        raise BenchmarkError(f"{where}: a pair must be a mapping", "see README, Evaluation")
    missing = [k for k in ("reference", "moving") if not d.get(k)]
    if missing:
        raise BenchmarkError(
            f"{where}: pair has no {' or '.join(missing)}", "give both image paths"
        )
    has_m = d.get("matrix") not in (None, "")
    has_d = d.get("displacement") not in (None, "")
    if has_m == has_d:
        raise BenchmarkError(
            f"{where}: pair needs exactly one of 'matrix' and 'displacement'",
            "give the ground truth as a 3x3 matrix or a dense displacement GeoTIFF",
        )
    model = d.get("model") or None
    if model is not None and model not in MODELS:
        raise BenchmarkError(f"{where}: unknown model {model!r}", f"use one of {', '.join(MODELS)}")

    def path(p: Any) -> Path:
        q = Path(str(p))
        return q if q.is_absolute() else folder / q

    matrix = None
    if has_m:
        value = d["matrix"]
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        matrix = _matrix(value, where)
    tags = dict(d.get("tags") or {})
    return BenchPair(
        name=str(d.get("name") or Path(where).stem),
        reference=path(d["reference"]),
        moving=path(d["moving"]),
        matrix=matrix,
        displacement=path(d["displacement"]) if has_d else None,
        model=model,
        tags=tags,
    )


def read_benchmark(path: str | Path) -> list[BenchPair]:
    """Pairs of a benchmark folder (``pair_*.json``) or index file (CSV / YAML).

    Only the index is read here; :func:`validate_pair` checks the files.

    Raises:
        BenchmarkError: missing path, no pairs, malformed entries or ground truth.
    """
    p = Path(path)
    if not p.exists():
        raise BenchmarkError(
            f"benchmark not found: {p}",
            "pass a folder of pair_XXXX.json files or an index .csv/.yaml "
            "(build one with `sarreg evaluate synth`)",
        )
    if p.is_dir():
        files = sorted(p.glob(PAIR_GLOB))
        if not files:
            for name in ("index.csv", "index.yaml", "index.yml"):
                if (p / name).exists():
                    return read_benchmark(p / name)
            raise BenchmarkError(
                f"no {PAIR_GLOB} files (nor index.csv/index.yaml) in {p}",
                "build a benchmark with `sarreg evaluate synth` or see README, Evaluation",
            )
        pairs = []
        for f in files:
            try:
                d = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise BenchmarkError(f"{f}: not valid JSON ({err})", "fix or remove it") from None
            pairs.append(_pair_from_mapping(d, p, str(f)))
    elif p.suffix.lower() == ".csv":
        pairs = _read_csv(p)
    elif p.suffix.lower() in (".yaml", ".yml"):
        pairs = _read_yaml(p)
    else:
        raise BenchmarkError(
            f"{p} is not a benchmark folder nor a .csv/.yaml index", "see README, Evaluation"
        )
    if not pairs:
        raise BenchmarkError(f"{p} lists no pairs", "add pairs or build one with evaluate synth")
    names = [q.name for q in pairs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise BenchmarkError(f"{p}: pair name {dup!r} is used twice", "give pairs unique names")
    return pairs


def _read_csv(path: Path) -> list[BenchPair]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.lstrip().startswith("#")))
    pairs = []
    for i, row in enumerate(rows):
        d: dict[str, Any] = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        tags = {
            k: v
            for k, v in d.items()
            if k not in ("name", "reference", "moving", "matrix", "displacement", "model") and v
        }
        d["tags"] = tags
        d.setdefault("name", f"pair_{i:04d}")
        d["name"] = d["name"] or f"pair_{i:04d}"
        pairs.append(_pair_from_mapping(d, path.parent, f"{path}:{i + 2}"))
    return pairs


def _read_yaml(path: Path) -> list[BenchPair]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise BenchmarkError(f"{path}: not valid YAML ({err})", "fix the file") from None
    items = doc.get("pairs") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise BenchmarkError(
            f"{path}: expected a list of pairs (or a 'pairs' list)", "see README, Evaluation"
        )
    return [
        _pair_from_mapping(
            {**d, "name": d.get("name") or f"pair_{i:04d}"} if isinstance(d, dict) else d,
            path.parent,
            f"{path}[{i}]",
        )
        for i, d in enumerate(items)
    ]


def load_ground_truth(pair: BenchPair, mov_shape: tuple[int, int]) -> GroundTruth:
    """The pair's :class:`GroundTruth`; a dense field is checked against the moving shape.

    Raises:
        BenchmarkError: unreadable field, wrong band count or shape.
    """
    if pair.matrix is not None:
        return GroundTruth(matrix=np.asarray(pair.matrix, np.float64))
    import rasterio

    assert pair.displacement is not None
    if not pair.displacement.exists():
        raise BenchmarkError(
            f"{pair.name}: displacement file not found: {pair.displacement}", "fix the path"
        )
    try:
        with quiet_rasterio(), rasterio.open(pair.displacement) as ds:
            data = ds.read().astype(np.float64)
            nodata = ds.nodata
    except rasterio.errors.RasterioError as err:
        raise BenchmarkError(
            f"{pair.name}: cannot read displacement {pair.displacement} ({err})", "fix the file"
        ) from None
    if data.shape[0] != 2 or data.shape[1:] != tuple(mov_shape):
        raise BenchmarkError(
            f"{pair.name}: displacement {pair.displacement.name} has shape {data.shape}, "
            f"expected (2, {mov_shape[0]}, {mov_shape[1]})",
            "write 2 bands (dx, dy) on the moving image's grid",
        )
    if nodata is not None and np.isfinite(nodata):
        data[:, np.any(data == nodata, axis=0)] = np.nan
    h, w = mov_shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.stack([xs + data[0], ys + data[1]], axis=-1)
    return GroundTruth(field=field)


def check_files(pair: BenchPair) -> list[str]:
    """Problems with a pair's files (empty list = fine): missing images or ground truth."""
    problems = []
    for what, p in (("reference", pair.reference), ("moving", pair.moving)):
        if not Path(p).is_file():
            problems.append(f"{pair.name}: {what} image not found: {p}")
    if pair.displacement is not None and not Path(pair.displacement).is_file():
        problems.append(f"{pair.name}: displacement file not found: {pair.displacement}")
    return problems


# ---------------------------------------------------------------------------------------------
# writing


def write_pair_json(pair: BenchPair, folder: Path) -> Path:
    """Write ``folder / f"{pair.name}.json"`` (atomic). Returns the path."""
    from sarreg.atomic import write_json_atomic

    return write_json_atomic(pair.to_json(folder), folder / f"{pair.name}.json")


def write_image(path: Path, data: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write a single-band float32 GeoTIFF on a plain pixel grid (NaN = invalid).

    The band description says 'power' so that :func:`sarreg.io.read_raster` reads it as linear
    intensity.
    """
    import rasterio

    arr = np.asarray(data, dtype=np.float32).copy()
    if valid is not None:
        arr[~valid] = np.nan
    h, w = arr.shape
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "float32",
        "nodata": float("nan"), "compress": "deflate", "predictor": 3,
    }  # fmt: skip
    with quiet_rasterio(), rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)
        ds.set_band_description(1, "power")


@contextlib.contextmanager
def quiet_rasterio():
    """Silence rasterio's NotGeoreferencedWarning: benchmark files are plain pixel grids."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield
