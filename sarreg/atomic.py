"""Atomic file output: write to a hidden temporary file in the destination folder, then rename.

A reader never sees a half-written output: either the old file (or nothing) is at the final
path, or the complete new one. If anything fails while writing, the temporary file is removed
and nothing appears at the final path.

Temporary files live in the *same folder* as the destination so that the final ``os.replace``
is a rename on one filesystem (atomic on POSIX), and they keep the destination's suffix so that
GDAL/matplotlib pick the right driver/format from the name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sarreg.errors import OutputError, OutputExistsError

log = logging.getLogger(__name__)

#: Sidecar files GDAL may write next to a raster (PAM metadata); moved/removed with it.
_SIDECAR_SUFFIXES = (".aux.xml",)


def _temp_name(path: Path) -> Path:
    """Hidden temporary path next to ``path`` with the same suffix.

    ``/a/out.tif`` -> ``/a/.out.tif.sarreg-1a2b3c4d.tif``.
    """
    token = secrets.token_hex(4)
    return path.with_name(f".{path.name}.sarreg-{token}{path.suffix}")


def _create_exclusive(path: Path) -> None:
    """Create an empty file at ``path``; fail if it exists. Mode 0666 minus the umask."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Remove ``path`` and its GDAL sidecars if they exist; never raise."""
    for p in (path, *(Path(str(path) + s) for s in _SIDECAR_SUFFIXES)):
        with contextlib.suppress(OSError):
            p.unlink()


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check early (before any computation) that ``path`` can be written.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: ``path`` is a folder, its folder does not exist, or the folder is not
            writable (probed by creating and removing a temporary file in it).

    Returns:
        ``path`` as an absolute :class:`~pathlib.Path`.
    """
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise OutputError(f"output path {p} is a folder", "give a file name with -o")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise OutputExistsError(f"output {p} exists", "pass --overwrite or choose another -o path")
    folder = p.parent
    if not folder.is_dir():
        raise OutputError(
            f"output folder {folder} does not exist", "create it or choose another -o path"
        )
    probe = _temp_name(p)
    try:
        _create_exclusive(probe)
    except OSError as err:
        raise OutputError(
            f"output folder {folder} is not writable ({err.strerror or err})",
            "fix its permissions or choose another -o path",
        ) from err
    _remove_quietly(probe)
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path to write ``path`` through.

    The temporary file is hidden, in the destination folder, has the destination's suffix and
    already exists (empty) when yielded; writers may overwrite or truncate it. On normal exit
    it is renamed onto ``path`` (``os.replace``; without ``overwrite`` a hard link is used so
    that a file that appeared meanwhile is never clobbered). On any exception the temporary
    file (and any GDAL ``.aux.xml`` sidecar) is removed, nothing appears at ``path``, and the
    exception propagates.

    Example::

        with atomic_write("out.tif", overwrite=True) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr, 1)
    """
    final = check_output_path(path, overwrite=overwrite)
    tmp = _temp_name(final)
    try:
        _create_exclusive(tmp)
    except OSError as err:
        raise OutputError(
            f"cannot create a temporary file in {final.parent} ({err.strerror or err})",
            "fix its permissions or choose another -o path",
        ) from err
    try:
        yield tmp
        _commit(tmp, final, overwrite)
    except BaseException as err:
        _remove_quietly(tmp)
        if _is_write_failure(err):
            raise OutputError(
                f"cannot write {final} ({_first_line(err)})",
                "free disk space (or fix the folder's permissions) and run again",
            ) from err
        raise
    log.debug("wrote %s", final)


#: errno values of a failed write: full disk, quota, file too large, I/O error, read-only
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)
#: words of GDAL's messages for a failed write (it reports errno only on stderr)
_WRITE_WORDS = ("write failed", "no space left", "disk space", "io error writing")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_write_failure(err: BaseException) -> bool:
    """True for an OSError of a failed write (ENOSPC, EDQUOT, ...) or GDAL's write errors."""
    from sarreg.errors import SarregError

    if isinstance(err, SarregError) or not isinstance(err, Exception):
        return False
    if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
        return True
    module = type(err).__module__ or ""
    if module.startswith("rasterio"):
        text = str(err).lower()
        return any(w in text for w in _WRITE_WORDS)
    return False


def _commit(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move ``tmp`` (and sidecars) onto ``final``; raise if ``final`` appeared meanwhile."""
    if not tmp.exists():
        raise OutputError(f"the writer removed its temporary file {tmp}", "report this as a bug")
    if overwrite:
        os.replace(tmp, final)
    else:
        try:
            os.link(tmp, final)  # atomic and fails if `final` exists
        except FileExistsError as err:
            raise OutputExistsError(
                f"output {final} appeared while it was being written",
                "pass --overwrite or choose another -o path",
            ) from err
        except OSError:  # filesystem without hard links
            if final.exists():
                raise OutputExistsError(
                    f"output {final} appeared while it was being written",
                    "pass --overwrite or choose another -o path",
                ) from None
            os.replace(tmp, final)
        else:
            tmp.unlink()
    for suffix in _SIDECAR_SUFFIXES:
        side_tmp = Path(str(tmp) + suffix)
        side_final = Path(str(final) + suffix)
        if side_tmp.exists():
            os.replace(side_tmp, side_final)
        elif overwrite and side_final.exists():
            side_final.unlink()  # stale metadata of the file just replaced


def _json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars/arrays and paths."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_text_atomic(text: str, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically. Returns the absolute path."""
    final = check_output_path(path, overwrite=overwrite)
    with atomic_write(final, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return final


def write_json_atomic(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON (indent 2, trailing newline) to ``path`` atomically.

    numpy scalars and arrays become Python numbers and (nested) lists, paths become strings.
    For richer objects (dataclasses, Affine, CRS) use :func:`sarreg.report.to_jsonable` first.
    Serialization happens before the file is opened, so an unserializable object leaves
    nothing behind.
    """
    return write_text_atomic(json_text(obj), path, overwrite=overwrite)


#: top-level lists of more records than this are written one compact record per line
RECORD_LINES_MIN = 32


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON (indent 2) with a trailing newline, numpy values converted
    (see :func:`write_json_atomic`). In a mapping, a value that is a list of more than
    :data:`RECORD_LINES_MIN` mappings (a report's tie points) is written one compact record per
    line: the same JSON, a third smaller and about twice as fast to write as all indented."""
    dump = functools.partial(json.dumps, default=_json_default)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        return dump(obj, indent=2) + "\n"
    lines = []
    for key, value in obj.items():
        if (
            isinstance(value, list)
            and len(value) > RECORD_LINES_MIN
            and all(isinstance(v, Mapping) for v in value)
        ):
            text = "[\n    " + ",\n    ".join(dump(v) for v in value) + "\n  ]"
        else:
            text = dump(value, indent=2).replace("\n", "\n  ")
        lines.append(f"  {dump(str(key))}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def make_output_folder(path: str | os.PathLike, hint: str) -> Path:
    """Create the output folder ``path`` (and parents) if needed.

    Raises:
        OutputError: it cannot be created (exit 9); ``hint`` says what to do.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"cannot create the output folder {p} ({err.strerror or err})", hint
        ) from err
    return p
