"""Training data: SAR scenes held in memory, random pair synthesis, a fixed validation set.

Sources (:class:`SourceConfig`):

- a folder (searched recursively) or a single file of rasters in any format GDAL reads
  (PNG, JPEG, TIFF, GeoTIFF; 8/16-bit, float power / amplitude / dB; one band, ``band``
  chooses), read with :func:`sarreg.io.read_raster`. Every image is a *scene*: pairs are cut
  from random ``crop x crop`` windows (windows with less than ``min_valid`` valid pixels are
  skipped), image 2 is a random warp of the scene around that window (see
  :mod:`sarreg.training.synth`). Scenes are converted to linear intensity and their own
  speckle smoothed once, at load time.
- ``pairs: true``: real multi-date pairs, from a folder of same-grid GeoTIFFs (grouped by
  identical size, geotransform and CRS) or from a CSV file with two columns of paths (relative
  to the CSV's folder; a header line is allowed). Date A gives image 1, date B warped gives
  image 2.

Validation uses a fixed list of held-out files (``exclude`` patterns in training, ``val``
sources for validation) and a fixed seed, so the same pairs are scored at every validation.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sarreg.errors import DataError, EmptyImageError, SarregError
from sarreg.preprocess import PreprocessConfig
from sarreg.training.step import Batch
from sarreg.training.synth import (
    SynthConfig,
    SynthPair,
    make_pair,
    smooth_intensity,
    to_linear_intensity,
)

logger = logging.getLogger(__name__)

RASTER_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".img", ".jp2", ".bmp", ".vrt")


@dataclass(frozen=True)
class SourceConfig:
    """One training (or validation) data source.

    Attributes:
        path: folder (recursive), raster file, or (with ``pairs``) CSV file.
        weight: relative sampling weight among the sources.
        band: 1-based band to read.
        kind: 'auto' or 'power' | 'amplitude' | 'db' | 'display' (see ``sarreg.io``).
        display_as: how 8-bit 'display' values relate to backscatter: 'intensity'
            (intensity scaled to 0..255, e.g. the Sentinel-1 training tiles) or 'amplitude'.
        pairs: multi-date pairs (same-grid images) instead of single scenes.
        min_valid: windows need at least this fraction of valid pixels.
        exclude: file-name patterns (fnmatch) left out, e.g. the validation tiles.
    """

    path: str
    weight: float = 1.0
    band: int = 1
    kind: str = "auto"
    display_as: str = "intensity"
    pairs: bool = False
    min_valid: float = 0.6
    exclude: tuple[str, ...] = ()


@dataclass
class Scene:
    """A scene in memory: linear intensity ``(H, W)`` float32 and valid mask ``(H, W)`` bool.

    ``integral`` is the ``(H+1, W+1)`` summed-area table of the mask (fast window checks).
    """

    name: str
    intensity: np.ndarray
    mask: np.ndarray
    integral: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.intensity.shape

    def valid_fraction(self, x0: int, y0: int, size: int) -> float:
        """Fraction of valid pixels in the ``size`` square window at ``(x0, y0)``."""
        s = self.integral
        total = s[y0 + size, x0 + size] - s[y0, x0 + size] - s[y0 + size, x0] + s[y0, x0]
        return float(total) / float(size * size)


@dataclass
class LoadedSource:
    """A source ready for sampling: scenes (single) or groups of same-grid dates (pairs)."""

    config: SourceConfig
    scenes: list[Scene]
    groups: list[list[int]]  # pairs: indices into scenes, >= 2 per group; else one per scene

    @property
    def weight(self) -> float:
        return self.config.weight


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def list_rasters(path: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Raster files under ``path`` (a file or a folder, recursive), sorted, minus ``exclude``."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_EXTENSIONS
        )
    return [p for p in files if not any(fnmatch.fnmatch(p.name, pat) for pat in exclude)]


def _make_scene(
    path: Path, source: SourceConfig, synth: SynthConfig | None
) -> tuple[Scene, tuple] | None:
    """Read one raster into a :class:`Scene` (smoothed when ``synth`` is given)."""
    from sarreg.io import read_raster

    try:
        r = read_raster(path, band=source.band, kind=source.kind)
    except SarregError as err:
        logger.warning("skipping %s: %s", path, err)
        return None
    intensity = to_linear_intensity(r.data, r.kind, source.display_as)
    mask = r.mask & np.isfinite(intensity)
    intensity = np.where(mask, intensity, 0.0).astype(np.float32)
    if synth is not None:
        intensity = smooth_intensity(
            intensity, mask, synth.smoothing, synth.smoothing_size, synth.source_looks
        )
    integral = cv2.integral(mask.astype(np.uint8))  # int32, (H+1, W+1)
    grid = (r.data.shape, tuple(r.transform) if r.transform is not None else None, str(r.crs))
    return Scene(path.name, intensity, mask, integral), grid


def _read_pairs_csv(path: Path) -> list[tuple[Path, Path]]:
    pairs = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            if len(cells) < 2:
                raise DataError(
                    f"{path}: line {row!r} has fewer than two image paths",
                    "write one pair per line: image1,image2",
                )
            a, b = (Path(c) if Path(c).is_absolute() else path.parent / c for c in cells[:2])
            if not a.exists() and not pairs and a.suffix.lower() not in RASTER_EXTENSIONS:
                continue  # header line
            pairs.append((a, b))
    return pairs


def load_source(source: SourceConfig, crop: int, synth: SynthConfig) -> LoadedSource:
    """Read a source into memory.

    Raises DataError: missing path, no raster file, no readable image, no image at least
    ``crop`` pixels on both sides, or pairs requested without two same-grid images.
    """
    path = Path(source.path)
    if not path.exists():
        raise DataError(
            f"training data not found: {path}",
            "pass --data with an existing folder (or file) of SAR images",
        )
    if source.pairs and path.is_file() and path.suffix.lower() == ".csv":
        return _load_csv_pairs(path, source, crop)
    files = list_rasters(path, source.exclude)
    if not files:
        raise DataError(
            f"no raster files (*{', *'.join(RASTER_EXTENSIONS)}) in {path}",
            "point --data at a folder of SAR images (GeoTIFF, PNG, JPEG, ...)",
        )
    scenes: list[Scene] = []
    grids: list[tuple] = []
    too_small: list[str] = []
    for p in files:
        loaded = _make_scene(p, source, None if source.pairs else synth)
        if loaded is None:
            continue
        scene, grid = loaded
        if min(scene.shape) < crop:
            too_small.append(f"{p.name} {scene.shape[1]}x{scene.shape[0]}")
            continue
        scenes.append(scene)
        grids.append(grid)
    if not scenes:
        if too_small:
            raise DataError(
                f"no image in {path} is at least {crop}x{crop} pixels (e.g. {too_small[0]})",
                "lower --crop or add larger images",
            )
        raise DataError(
            f"none of the {len(files)} raster files in {path} could be read",
            "check the files with gdalinfo (see the warnings above)",
        )
    if too_small:
        logger.warning("%d images smaller than the crop skipped in %s", len(too_small), path)
    if not source.pairs:
        return LoadedSource(source, scenes, [[i] for i in range(len(scenes))])
    by_grid: dict[tuple, list[int]] = {}
    for i, g in enumerate(grids):
        by_grid.setdefault(g, []).append(i)
    groups = [g for g in by_grid.values() if len(g) >= 2]
    if not groups:
        raise DataError(
            f"multi-date pairs need at least two images on the same grid in {path}, found "
            f"{len(scenes)} image(s) on {len(by_grid)} different grid(s)",
            "add another date of the same scene, or set pairs: false to synthesize pairs",
        )
    logger.info("%s: %d multi-date groups", path, len(groups))
    return LoadedSource(source, scenes, groups)


def _load_csv_pairs(path: Path, source: SourceConfig, crop: int) -> LoadedSource:
    pairs = _read_pairs_csv(path)
    if not pairs:
        raise DataError(f"{path} lists no image pairs", "write one pair per line: image1,image2")
    scenes: list[Scene] = []
    index: dict[Path, int] = {}
    groups = []
    for a, b in pairs:
        ids = []
        for p in (a, b):
            if p not in index:
                if not p.exists():
                    raise DataError(f"{path}: image not found: {p}", "fix the path in the CSV")
                loaded = _make_scene(p, source, None)
                if loaded is None:
                    raise DataError(f"{path}: cannot read {p}", "fix or remove that pair")
                index[p] = len(scenes)
                scenes.append(loaded[0])
            ids.append(index[p])
        sa, sb = scenes[ids[0]], scenes[ids[1]]
        if sa.shape != sb.shape:
            raise DataError(
                f"{path}: pair {a.name}, {b.name} is not on one grid ({sa.shape} vs {sb.shape})",
                "list only co-registered same-grid pairs",
            )
        if min(sa.shape) < crop:
            logger.warning("pair %s, %s smaller than the crop; skipped", a.name, b.name)
            continue
        groups.append(ids)
    if not groups:
        raise DataError(f"no pair in {path} is at least {crop}x{crop} pixels", "lower --crop")
    return LoadedSource(source, scenes, groups)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


class PairGenerator:
    """Random training pairs from loaded sources (all state in the passed ``rng``).

    Args:
        sources: loaded sources (sampled by weight; scenes within a source by area).
        crop: side of the images.
        synth: synthesis ranges.
        preprocess: normalization shared with inference.
    """

    def __init__(
        self,
        sources: Sequence[LoadedSource],
        crop: int,
        synth: SynthConfig,
        preprocess: PreprocessConfig,
    ) -> None:
        if not sources:
            raise DataError("no training data source given", "pass --data DIR")
        self.sources = list(sources)
        self.crop = crop
        self.synth = synth
        self.preprocess = preprocess
        w = np.array([max(s.weight, 0.0) for s in self.sources], dtype=np.float64)
        if w.sum() <= 0:
            raise DataError("all data source weights are 0", "give a source a positive weight")
        self._source_p = w / w.sum()
        self._group_p = []
        for s in self.sources:
            area = np.array([float(s.scenes[g[0]].mask.sum()) for g in s.groups], dtype=np.float64)
            self._group_p.append(area / area.sum())

    def sample(self, rng: np.random.Generator, max_tries: int = 20) -> SynthPair:
        """One pair; windows with too few valid pixels are redrawn (up to ``max_tries``)."""
        last_err: Exception | None = None
        for _ in range(max_tries):
            si = int(rng.choice(len(self.sources), p=self._source_p))
            src = self.sources[si]
            group = src.groups[int(rng.choice(len(src.groups), p=self._group_p[si]))]
            if len(group) >= 2:
                a, b = rng.choice(group, size=2, replace=False)
                s1, s2 = src.scenes[int(a)], src.scenes[int(b)]
            else:
                s1, s2 = src.scenes[group[0]], None
            h, w = s1.shape
            x0 = int(rng.integers(0, w - self.crop + 1))
            y0 = int(rng.integers(0, h - self.crop + 1))
            frac = s1.valid_fraction(x0, y0, self.crop)
            if s2 is not None:
                frac = min(frac, s2.valid_fraction(x0, y0, self.crop))
            if frac < src.config.min_valid:
                continue
            try:
                return make_pair(
                    s1.intensity,
                    s1.mask,
                    (x0, y0),
                    self.crop,
                    rng,
                    self.synth,
                    self.preprocess,
                    scene2=None if s2 is None else s2.intensity,
                    mask2=None if s2 is None else s2.mask,
                )
            except EmptyImageError as err:  # e.g. a constant window
                last_err = err
                continue
        raise DataError(
            f"could not draw a usable {self.crop}x{self.crop} training window in {max_tries} "
            f"tries ({last_err or 'too little valid data'})",
            "lower min_valid or --crop, or use images with more valid pixels",
        )

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        """``size`` pairs stacked into a :class:`Batch`."""
        return collate_pairs([self.sample(rng) for _ in range(size)])


def collate_pairs(pairs: Sequence[SynthPair]) -> Batch:
    """Stack pairs into a :class:`Batch` of CPU tensors."""

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(p, name) for p in pairs]))

    return Batch(
        image1=stack("image1")[:, None],
        image2=stack("image2")[:, None],
        mask1=stack("mask1"),
        mask2=stack("mask2"),
        field=stack("field"),
        valid=stack("valid"),
        homography=stack("homography"),
    )


class PairStream(IterableDataset):
    """Endless stream of batches (a torch ``IterableDataset``; use ``batch_size=None``).

    The batch of training step ``k`` is drawn from a generator seeded by ``(seed, k)``: a run
    resumed at step ``k`` draws exactly the batches the uninterrupted run draws from step ``k``
    on, and does not replay those before. With ``n`` DataLoader workers, worker ``i`` makes the
    batches of steps ``start_step + i + j * n`` (the DataLoader takes them round-robin, so in
    step order).
    """

    def __init__(
        self, generator: PairGenerator, batch_size: int, seed: int, start_step: int = 0
    ) -> None:
        super().__init__()
        self.generator = generator
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        wid, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.start_step + wid
        while True:
            yield self.generator.batch(self.batch_size, np.random.default_rng([self.seed, step]))
            step += n_workers


def validation_pairs(
    sources: Sequence[LoadedSource],
    n: int,
    crop: int,
    synth: SynthConfig,
    preprocess: PreprocessConfig,
    seed: int,
) -> list[SynthPair]:
    """A fixed set of ``n`` held-out pairs (same seed -> same pairs)."""
    gen = PairGenerator(sources, crop, synth, preprocess)
    rng = np.random.default_rng([seed, 7919])
    return [gen.sample(rng, max_tries=100) for _ in range(n)]


def total_pixels(sources: Sequence[LoadedSource]) -> int:
    """Valid pixels held in memory by ``sources``."""
    return int(sum(s.mask.sum() for src in sources for s in src.scenes))


def describe(sources: Sequence[LoadedSource]) -> str:
    """One line per source for logs."""
    lines = []
    for s in sources:
        mp = sum(sc.mask.size for sc in s.scenes) / 1e6
        kind = "multi-date groups" if s.config.pairs else "scenes"
        n = len(s.groups)
        lines.append(f"{s.config.path}: {n} {kind}, {mp:.1f} MP, weight {s.weight:g}")
    return "; ".join(lines)
