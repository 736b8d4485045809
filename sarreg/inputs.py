"""Stage 1 of a registration: the two inputs' metadata, their georeferencing and overlap, and
the run's context (model, settings, timer) that the later stages share. No pixel is read."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarreg.config import RegisterConfig
from sarreg.errors import NotGeoreferencedError

log = logging.getLogger(__name__)

#: a georeferencing prior: (N, 2) full-resolution moving pixel centres -> reference pixel centres
Prior = Callable[[np.ndarray], np.ndarray]


class Timer:
    """Wall-clock time per named stage, in seconds."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class Inputs:
    """The two input files and what their metadata say (``sarreg.io.RasterInfo`` each).

    ``prior_full``: the georeferencing prior (moving -> reference full-resolution pixel
    centres) when both are georeferenced, else None; ``prior_scale``: reference pixels per
    moving pixel from it (None without).
    """

    ref_path: str
    mov_path: str
    ref_info: object
    mov_info: object
    prior_full: Prior | None = None
    prior_scale: float | None = None

    @property
    def georef(self) -> bool:
        return self.ref_info.transform is not None and self.mov_info.transform is not None


@dataclass
class RunContext:
    """What every estimation stage needs: the inputs, the model, the settings, the timer."""

    inputs: Inputs
    loaded: object  # sarreg.model.checkpoint.LoadedModel
    pre_cfg: object  # sarreg.preprocess.PreprocessConfig
    config: RegisterConfig
    pyramid: object  # sarreg.config.PyramidPlan
    timer: Timer = field(default_factory=Timer)

    # shorthands used by the stages
    @property
    def ref_path(self) -> str:
        return self.inputs.ref_path

    @property
    def mov_path(self) -> str:
        return self.inputs.mov_path

    @property
    def ref_info(self):
        return self.inputs.ref_info

    @property
    def mov_info(self):
        return self.inputs.mov_info

    @property
    def georef(self) -> bool:
        return self.inputs.georef


def open_inputs(ref_path: str, mov_path: str, config: RegisterConfig) -> Inputs:
    """Read both inputs' metadata and check what the settings need of them: a georeferenced
    reference for ``--mode georef``, georeferenced inputs for a GeoJSON tie-point export, and
    overlapping footprints when both are georeferenced. Raises a ``SarregError`` subclass."""
    from sarreg import geometry, io

    ref_info = io.raster_info(ref_path, band=config.input.band_ref)
    mov_info = io.raster_info(mov_path, band=config.input.band_mov)
    inputs = Inputs(ref_path, mov_path, ref_info, mov_info)
    if config.output.mode == "georef" and ref_info.transform is None:
        raise NotGeoreferencedError(
            f"--mode georef needs a georeferenced reference, but {ref_path} has no geotransform",
            "use --mode resample, or a georeferenced reference image",
        )
    if (
        config.output.gcps
        and Path(config.output.gcps).suffix.lower() != ".csv"
        and not inputs.georef
    ):
        raise NotGeoreferencedError(
            f"a GeoJSON tie-point export needs georeferenced images, but {ref_path} or "
            f"{mov_path} has no geotransform",
            "name the --gcps file *.csv",
        )
    if inputs.georef:
        geometry.check_overlap(
            ref_info.transform,
            ref_info.crs,
            ref_info.shape,
            mov_info.transform,
            mov_info.crs,
            mov_info.shape,
            ref_name=ref_path,
            mov_name=mov_path,
        )
        inputs.prior_full = geometry.prior_from_georef(
            ref_info.transform, ref_info.crs, mov_info.transform, mov_info.crs
        )
        inputs.prior_scale = prior_scale(inputs.prior_full, mov_info.shape)
    return inputs


def prior_scale(prior_full: Prior, mov_shape) -> float:
    """Reference pixels per moving pixel of a mapping (full resolution), at the moving centre."""
    h, w = mov_shape
    cx, cy = w / 2.0, h / 2.0
    pts = np.array([[cx, cy], [cx + 10.0, cy], [cx, cy + 10.0]])
    q = prior_full(pts)
    jac = np.stack([(q[1] - q[0]) / 10.0, (q[2] - q[0]) / 10.0], axis=1)
    return float(math.sqrt(abs(np.linalg.det(jac))))


def work_sizes(ref_info, mov_info, max_size: int, prior_scale: float | None):
    """Largest side to read each image at (at most ``max_size``), so that both are at about
    the same pixel size.

    ``prior_scale``: reference pixels per moving pixel from the georeferencing (or ``None``).
    Returns (max_size_ref, max_size_mov); ``None`` means full resolution.
    """
    ref_side = max(ref_info.shape)
    mov_side = max(mov_info.shape)
    dec_ref = max(1.0, ref_side / max_size)
    dec_mov = max(1.0, mov_side / max_size)
    if prior_scale is not None and prior_scale > 0:
        # pixel size ratio: one moving pixel covers prior_scale reference pixels.
        if prior_scale > 1.25:  # reference finer: decimate it to the moving pixel size
            dec_ref = max(dec_ref, prior_scale * dec_mov)
        elif prior_scale < 0.8:  # moving finer
            dec_mov = max(dec_mov, dec_ref / prior_scale)
    size_ref = None if dec_ref <= 1.0 else int(math.ceil(ref_side / dec_ref))
    size_mov = None if dec_mov <= 1.0 else int(math.ceil(mov_side / dec_mov))
    return size_ref, size_mov


def coarse_read_side(inputs: Inputs, config: RegisterConfig) -> int:
    """Side (pixels) of the square that holds as many pixels as the larger of the coarse
    pass's two reads (:func:`work_sizes` at ``config.input.coarse_read_size``; an image read
    whole counts its own shape): 1024 for a 1024 x 1024 read, 512 for 1024 x 256."""
    sizes = work_sizes(
        inputs.ref_info, inputs.mov_info, config.input.coarse_read_size, inputs.prior_scale
    )
    pixels = 0.0
    for size, info in zip(sizes, (inputs.ref_info, inputs.mov_info), strict=True):
        h, w = info.shape
        k = 1.0 if size is None else size / max(h, w)
        pixels = max(pixels, h * w * k * k)
    return int(round(math.sqrt(pixels)))


def snap_decimation(d: float) -> float:
    """``d`` rounded to an integer when within 10 % of one.

    A decimated read averages whole-pixel bins (GDAL); a factor just below an integer (1.99)
    would bin whole pixels anyway and drift by up to a pixel from the nominal grid."""
    r = round(d)
    return float(r) if abs(d - r) < 0.1 * d else float(d)


def tile_decimations(scale: float) -> tuple[float, float]:
    """Decimation of the reference and moving tile reads for a transform of ``scale``
    reference pixels per moving pixel: the finer image is read at the coarser one's pixel
    size, the other at full resolution."""
    dec_ref = snap_decimation(scale) if scale > 1.25 else 1.0
    dec_mov = snap_decimation(1.0 / scale) if scale < 0.8 else 1.0
    return dec_ref, dec_mov
