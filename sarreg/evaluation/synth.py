"""Synthetic benchmarks from real SAR images, with the generator used for training.

``build_benchmark`` reads the given images (files or folders); images on one grid (same size,
geotransform and CRS; e.g. the OPERA dates) form a multi-date group, the others are single
scenes. Pair ``i`` takes group ``i mod G`` (groups sorted by name) and its own random generator
seeded by ``(SEED_SALT, seed, i)``, a seed space apart from training's (``(seed, step,
worker)``) and validation's (``(seed, 7919)``), so a pair does not depend on ``n``. It is made by
:func:`sarreg.training.synth.make_intensity_pair`, exactly as a training pair up to the
normalization: a crop of the scene (reference) and the scene warped by a random transform
(moving); single scenes have their own speckle smoothed (3x3 box) and get independent Gamma
speckle on each side, multi-date pairs keep their real speckle and temporal change. Both sides
are written as linear power (float32 GeoTIFF, NaN = nodata, no georeferencing) with the ground
truth ``M = H^-1`` (moving px -> reference px) in ``pair_XXXX.json``.

Difficulty levels (:data:`DIFFICULTIES`): easy (rotation <= 5 deg, scale 0.9..1.1, looks 2..8),
medium (<= 15 deg, 0.8..1.25, slight anisotropy and shear, looks 1..4), hard (<= 30 deg,
0.6..1.6, perspective, looks 1..2; estimated as a homography), extreme (any rotation, scale
0.3..3, half of the pairs mirrored left-right, looks 1..4; estimated as an affine transform and
registered with reflections allowed: every extreme pair carries the tag ``allow_reflection``
and its ``mirrored`` flag). Pairs whose scale leaves the moving image inside a small part of
the reference count their overlap on the smaller side (:func:`overlap_share`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sarreg.errors import ConfigError, DataError, EmptyImageError, OutputExistsError, SarregError
from sarreg.evaluation.bench import BenchPair, write_image, write_pair_json
from sarreg.training.synth import SynthConfig

log = logging.getLogger(__name__)

#: first element of every benchmark pair's seed sequence (training uses (seed, step, worker))
SEED_SALT = 0x5A7E_E7A1

DIFFICULTIES: dict[str, dict] = {
    "easy": dict(
        rotation_deg=5.0, scale=(0.9, 1.1), aspect=1.0, shear=0.0, translation=0.05,
        perspective=0.0, looks=(2.0, 8.0),
    ),
    "medium": dict(
        rotation_deg=15.0, scale=(0.8, 1.25), aspect=1.05, shear=0.02, translation=0.1,
        perspective=0.0, looks=(1.0, 4.0),
    ),
    "hard": dict(
        rotation_deg=30.0, scale=(0.6, 1.6), aspect=1.1, shear=0.05, translation=0.1,
        perspective=0.05, looks=(1.0, 2.0),
    ),
    "extreme": dict(
        rotation_deg=180.0, scale=(0.3, 3.0), aspect=1.05, shear=0.02, translation=0.1,
        perspective=0.0, looks=(1.0, 4.0),
    ),
}  # fmt: skip
#: transform model a pair of each difficulty is estimated with
MODEL_OF = {"easy": "affine", "medium": "affine", "hard": "homography", "extreme": "affine"}
#: probability that a pair of the level is mirrored left-right (others: 0)
FLIP_PROB = {"extreme": 0.5}


def synth_config(difficulty: str, overrides: dict | None = None) -> SynthConfig:
    """:class:`SynthConfig` of a difficulty level (other settings as in training), with
    optional ``overrides`` of any :class:`SynthConfig` field."""
    if difficulty not in DIFFICULTIES:
        raise ConfigError(
            f"unknown difficulty {difficulty!r}", f"use one of {', '.join(DIFFICULTIES)}"
        )
    return replace(SynthConfig(), **{**DIFFICULTIES[difficulty], **(overrides or {})})


@dataclass
class _Scene:
    path: Path
    intensity: np.ndarray  # (H, W) float32 linear, invalid 0
    mask: np.ndarray  # (H, W) bool


@dataclass
class _Group:
    name: str
    scenes: list[_Scene]

    @property
    def multidate(self) -> bool:
        return len(self.scenes) > 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.scenes[0].intensity.shape


def sensor_of(name: str) -> str:
    """A sensor tag guessed from a file name (for the benchmark's tags only)."""
    low = name.lower()
    for key, tag in (
        ("umbra", "Umbra X-band"),
        ("opera", "Sentinel-1 C-band (OPERA RTC)"),
        ("airsar", "AIRSAR L-band"),
        ("s1", "Sentinel-1 C-band"),
    ):
        if key in low:
            return tag
    return "unknown"


def load_groups(
    images: list[Path], min_size: int, display_as: str, synth: SynthConfig
) -> list[_Group]:
    """Read the images into single-scene and multi-date groups (see the module docstring).

    Raises:
        DataError: a path is missing, or no image is at least ``min_size`` px on both sides.
    """
    from sarreg.io import read_raster
    from sarreg.training.data import list_rasters
    from sarreg.training.synth import smooth_intensity, to_linear_intensity

    files: list[Path] = []
    for p in images:
        p = Path(p)
        if not p.exists():
            raise DataError(f"image path not found: {p}", "pass existing files or folders")
        files.extend(f for f in list_rasters(p) if f not in files)
    if not files:
        raise DataError(f"no raster files in {', '.join(map(str, images))}", "pass SAR images")
    by_grid: dict[tuple, list[tuple[Path, np.ndarray, np.ndarray]]] = {}
    for f in files:
        try:
            r = read_raster(f)
        except SarregError as err:
            log.warning("skipping %s: %s", f, err)
            continue
        if min(r.shape) < min_size:
            log.info("skipping %s: %dx%d is smaller than %d px", f, *r.shape[::-1], min_size)
            continue
        inten = to_linear_intensity(r.data, r.kind, display_as)
        mask = r.mask & np.isfinite(inten) & (inten > 0)
        inten = np.where(mask, inten, 0.0).astype(np.float32)
        key = (r.shape, tuple(r.transform), str(r.crs)) if r.transform is not None else (str(f),)
        by_grid.setdefault(key, []).append((f, inten, mask))
    groups = []
    for members in by_grid.values():
        members.sort(key=lambda m: m[0].name)
        if len(members) == 1:
            f, inten, mask = members[0]
            inten = smooth_intensity(
                inten, mask, synth.smoothing, synth.smoothing_size, synth.source_looks
            )
            groups.append(_Group(f.name, [_Scene(f, inten, mask)]))
        else:
            name = f"{members[0][0].name} (+{len(members) - 1} dates)"
            groups.append(_Group(name, [_Scene(f, i, m) for f, i, m in members]))
    if not groups:
        raise DataError(
            f"no readable image of at least {min_size}x{min_size} px in the given paths",
            "pass larger images or lower --min-size",
        )
    groups.sort(key=lambda g: g.name)
    return groups


def mirror_x(width: int) -> np.ndarray:
    """``(3, 3)`` left-right mirror of an image ``width`` px wide: ``x -> (width - 1) - x``
    (pixel centres)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def draw_transform(
    rng: np.random.Generator, crop: int, synth: SynthConfig, flip_prob: float = 0.0
) -> tuple[np.ndarray, bool]:
    """A random ``(3, 3)`` transform reference px -> moving px of a ``crop`` x ``crop`` pair
    (:func:`sarreg.training.synth.random_homography` with ``synth``'s ranges), mirrored
    left-right in the moving image with probability ``flip_prob``; returns it and whether it
    is mirrored."""
    from sarreg.training.synth import random_homography

    m = random_homography(rng, (crop, crop), config=synth)
    flip = bool(flip_prob > 0 and rng.uniform() < flip_prob)
    if flip:
        m = mirror_x(crop) @ m
    return m / m[2, 2], flip


def overlap_share(valid: np.ndarray, m: np.ndarray) -> float:
    """Share of the smaller side covered by the overlap: ``valid`` ``(H, W)`` bool marks the
    reference pixels that the transform ``m`` (reference px -> moving px, same crop size)
    maps onto valid moving pixels; the moving side of that area is ``|det|`` times larger."""
    det = abs(float(np.linalg.det(m[:2, :2])))
    share = float(valid.mean())
    return min(1.0, max(share, share * det))


def _make_one(
    group: _Group,
    crop: int,
    rng: np.random.Generator,
    synth: SynthConfig,
    min_valid: float,
    tries: int = 50,
    flip_prob: float = 0.0,
):
    """One pair from ``group``: ``(IntensityPair, scene_a, scene_b, origin, crop, mirrored)``.
    Without ``flip_prob`` the random draws are those of a training pair (benchmarks of the
    easy/medium/hard levels keep their pairs)."""
    from sarreg.training.synth import make_intensity_pair

    h, w = group.shape
    c = min(crop, h, w)
    last = "too little valid data"
    for _ in range(tries):
        if group.multidate:
            a, b = rng.choice(len(group.scenes), size=2, replace=False)
            sa, sb = group.scenes[int(a)], group.scenes[int(b)]
        else:
            sa = sb = group.scenes[0]
        x0 = int(rng.integers(0, w - c + 1))
        y0 = int(rng.integers(0, h - c + 1))
        win = (slice(y0, y0 + c), slice(x0, x0 + c))
        if min(sa.mask[win].mean(), sb.mask[win].mean()) < min_valid:
            continue
        flip, m = False, None
        if flip_prob > 0:
            m, flip = draw_transform(rng, c, synth, flip_prob)
        try:
            pair = make_intensity_pair(
                sa.intensity, sa.mask, (x0, y0), c, rng, synth,
                scene2=sb.intensity if group.multidate else None,
                mask2=sb.mask if group.multidate else None, homography=m,
            )  # fmt: skip
        except EmptyImageError as err:
            last = str(err)
            continue
        share = pair.valid.mean() if m is None else overlap_share(pair.valid, pair.homography)
        if share < 0.5 * min_valid or not pair.mask2.any():
            last = "too little overlap"
            continue
        return pair, sa, sb, (x0, y0), c, flip
    raise DataError(
        f"could not draw a usable {c}x{c} pair from {group.name} in {tries} tries ({last})",
        "lower --min-valid or use images with more valid pixels",
    )


def _guard_benchmark_folder(out: Path, images) -> None:
    """Refuse (exit 12, both paths named) a benchmark folder whose ``pair_*`` files, which a
    new benchmark replaces, include an input image, or an ``out`` that is an input file."""
    from sarreg.outputs import guard_outputs

    inputs = []
    for p in map(Path, images):
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        inputs += [("input image", f) for f in files if f.is_file()]
    if out.is_dir():
        outputs = [("benchmark file", f) for f in sorted(out.glob("pair_*"))]
    else:
        outputs = [("benchmark folder", out)]
    guard_outputs(outputs, inputs)


def build_benchmark(
    images: list[Path],
    out: Path,
    n: int = 50,
    seed: int = 0,
    difficulty: str = "medium",
    crop: int = 512,
    min_size: int = 128,
    min_valid: float = 0.3,
    display_as: str = "intensity",
    overwrite: bool = False,
    synth_overrides: dict | None = None,
) -> list[BenchPair]:
    """Write a synthetic benchmark of ``n`` pairs into ``out`` (see the module docstring).

    Args:
        images: files or folders of SAR images.
        out: output folder (created).
        n: number of pairs.
        seed: benchmark seed (pairs are reproducible from it).
        difficulty: 'easy' | 'medium' | 'hard' | 'extreme'.
        crop: side of the pairs (smaller images give pairs of their smaller side).
        min_size: images with a side below this are left out.
        min_valid: crop windows need this fraction of valid pixels in both dates.
        display_as: how 8-bit display products relate to backscatter ('intensity' or
            'amplitude').
        overwrite: replace an existing benchmark in ``out``.
        synth_overrides: changes to the difficulty's :class:`SynthConfig` (e.g. no speckle,
            for testing the geometry).

    Raises:
        ConfigError: bad arguments. DataError: unusable images. OutputExistsError.
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}", "use e.g. --n 50")
    if crop < 64:
        raise ConfigError(f"--crop must be at least 64, got {crop}", "use e.g. --crop 512")
    if display_as not in ("intensity", "amplitude"):
        raise ConfigError(f"unknown display_as {display_as!r}", "use intensity or amplitude")
    synth = synth_config(difficulty, synth_overrides)
    out = Path(out)
    _guard_benchmark_folder(out, images)
    if out.exists() and any(out.glob("pair_*")) and not overwrite:
        raise OutputExistsError(
            f"{out} already holds a benchmark", "pass --overwrite or choose another --out"
        )
    groups = load_groups([Path(p) for p in images], min_size, display_as, synth)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("pair_*"):
        old.unlink()
    model = MODEL_OF[difficulty]
    pairs = []
    for i in range(n):
        rng = np.random.default_rng([SEED_SALT, int(seed), i])
        group = groups[i % len(groups)]
        p, sa, sb, origin, c, flip = _make_one(
            group, crop, rng, synth, min_valid, flip_prob=FLIP_PROB.get(difficulty, 0.0)
        )
        name = f"pair_{i:04d}"
        ref_path, mov_path = out / f"{name}_ref.tif", out / f"{name}_mov.tif"
        write_image(ref_path, p.intensity1, p.mask1)
        write_image(mov_path, p.intensity2, p.mask2)
        m = np.linalg.inv(p.homography)
        tags = {
            "sensor": sensor_of(sa.path.name),
            "difficulty": difficulty,
            "multidate": group.multidate,
            "source_ref": sa.path.name,
            "source_mov": sb.path.name,
            "origin": list(origin),
            "crop": c,
        }
        if difficulty in FLIP_PROB:
            tags["mirrored"] = flip
            tags["allow_reflection"] = True
        pair = BenchPair(name, ref_path, mov_path, m / m[2, 2], None, model, tags)
        write_pair_json(pair, out)
        pairs.append(pair)
        log.info("%s: %s, %dx%d", name, group.name, c, c)
    _write_meta(out, images, n, seed, difficulty, crop, min_valid, display_as, synth, groups)
    return pairs


def _write_meta(out, images, n, seed, difficulty, crop, min_valid, display_as, synth, groups):
    import yaml

    from sarreg import __version__
    from sarreg.atomic import write_text_atomic

    meta = {
        "generator": f"sarreg {__version__} evaluate synth",
        "n": n,
        "seed": seed,
        "seed_salt": SEED_SALT,
        "difficulty": difficulty,
        "model": MODEL_OF[difficulty],
        "flip_prob": FLIP_PROB.get(difficulty, 0.0),
        "crop": crop,
        "min_valid": min_valid,
        "display_as": display_as,
        "images": [str(p) for p in images],
        "groups": [
            {"name": g.name, "multidate": g.multidate, "files": [str(s.path) for s in g.scenes]}
            for g in groups
        ],
        "synth": synth.to_dict(),
        "convention": "matrix maps moving pixel centres to reference pixel centres",
    }
    write_text_atomic(yaml.safe_dump(meta, sort_keys=False), out / "benchmark.yaml")
