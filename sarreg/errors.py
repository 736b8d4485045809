"""All exceptions sarreg raises on purpose.

Every error carries a one-line message that names the problem and what to do about it,
and a distinct process exit code so that scripts can tell failures apart. The CLI prints
``sarreg: error: <message>`` and exits with ``exit_code``; a traceback is shown only with
``--verbose``.
"""

from __future__ import annotations


class SarregError(Exception):
    """Base class. ``str(err)`` is the one-line message shown to the user."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        text = message if not hint else f"{message}; {hint}"
        super().__init__(" ".join(text.split()))  # always one line


class InputFileError(SarregError):
    """An input file is missing, unreadable or not a raster."""

    exit_code = 3


class BandError(SarregError):
    """The requested band does not exist in the raster."""

    exit_code = 4


class NoOverlapError(SarregError):
    """The two images' footprints do not overlap."""

    exit_code = 5


class EmptyImageError(SarregError):
    """An image has no valid pixels, or no contrast to find features on."""

    exit_code = 6


class TooFewMatchesError(SarregError):
    """Too few matches or RANSAC inliers for the requested transform model."""

    exit_code = 7


class VerificationError(TooFewMatchesError):
    """The estimated transform does not line up the images (independent check failed)."""


class DegenerateTransformError(SarregError):
    """The estimated transform is singular or implausible (e.g. scale outside 0.1..10)."""

    exit_code = 8


class OutputError(SarregError):
    """An output path cannot be written."""

    exit_code = 9


class OutputExistsError(SarregError):
    """The output exists and ``--overwrite`` was not given."""

    exit_code = 10


class NotGeoreferencedError(SarregError):
    """An operation needs georeferencing that the input does not have."""

    exit_code = 11


class ConfigError(SarregError):
    """A configuration file or option is invalid (unknown key, bad value)."""

    exit_code = 12


class CheckpointError(SarregError):
    """A model checkpoint cannot be read, is of an unknown architecture or does not fit."""

    exit_code = 13


class TrainingError(SarregError):
    """Training cannot go on (e.g. a NaN/inf loss)."""

    exit_code = 14


class DataError(SarregError):
    """Training or benchmark data is missing, unreadable or unsuitable."""

    exit_code = 15


class BenchmarkError(SarregError):
    """A benchmark definition is invalid (missing file, wrong ground-truth shape, ...)."""

    exit_code = 16


class ClusterError(SarregError):
    """A Dask scheduler cannot be reached or a cluster cannot be started."""

    exit_code = 17


class SceneFailuresError(SarregError):
    """Some scenes of a batch failed (the others were registered; see the batch summary)."""

    exit_code = 18


def crs_mismatch_error(xy, src_crs, dst_crs, cause: BaseException | None) -> NotGeoreferencedError:
    """The error for map coordinates that their CRS cannot hold (e.g. UTM metres labelled
    EPSG:4326): PROJ fails or returns inf. ``xy`` ``(N, 2)`` are the coordinates in ``src_crs``."""
    import numpy as np

    pts = np.asarray(xy, dtype=float)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    why = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause) else ""
    return NotGeoreferencedError(
        f"coordinates x {lo[0]:.6g}..{hi[0]:.6g}, y {lo[1]:.6g}..{hi[1]:.6g} do not fit their "
        f"CRS {src_crs} and cannot be converted to {dst_crs}{why}",
        "the file's CRS label is wrong for its geotransform; fix it (e.g. gdal_edit.py -a_srs) "
        "or register without georeferencing",
    )
