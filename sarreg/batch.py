"""Batch georeferencing: register many moving scenes, each as a Dask task, resumably.

Three steps, each usable on its own:

1. **Plan** (:func:`plan_jobs`): inputs -> a list of :class:`BatchJob` (reference, moving, output
   and report paths). Inputs are a reference plus moving scenes (paths or glob patterns, or a
   list file with one path per line), or a CSV of (reference, moving) pairs.
2. **Run** (:func:`run_batch`): scenes whose output and report exist for the same inputs and
   settings are skipped (see :func:`fingerprint`); the others run as tasks on a Dask
   ``LocalCluster`` (``workers`` processes, each registering one scene at a time with
   ``threads_per_worker`` PyTorch/OpenCV threads), on an existing scheduler, or in this process
   (``workers=0``). Each task calls :func:`sarreg.pipeline.register` and returns a
   :class:`SceneResult`; a failure of one scene is recorded and the others go on. Model weights
   are loaded once per worker process (``sarreg.pipeline.load_model`` is cached per process).
3. **Summarize**: ``batch_summary.csv`` and ``batch_summary.geojson`` (footprints in EPSG:4326)
   in the output folder, written atomically.

Files per scene in the output folder: ``NAME.tif`` and ``NAME.json`` (the output and the
report of ``sarreg register``, as it writes them) and ``NAME.batch.json``, the scene's batch
record, written last: status ('ok' or 'failed'), fingerprint, output and report sizes, figures
for the summary, or the error. Resuming reads only these small records.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sarreg.config import RegisterConfig, with_values
from sarreg.errors import (
    ClusterError,
    ConfigError,
    InputFileError,
    OutputError,
    SarregError,
)

log = logging.getLogger(__name__)

SUMMARY_CSV = "batch_summary.csv"
SUMMARY_GEOJSON = "batch_summary.geojson"
RECORD_SUFFIX = ".batch.json"
#: CRS of the footprints in the summary GeoJSON (RFC 7946: longitude, latitude on WGS 84).
FOOTPRINT_CRS = "EPSG:4326"
#: Columns of the summary CSV, in order (also the GeoJSON feature properties).
CSV_COLUMNS = (
    "name",
    "status",
    "this_run",
    "reference",
    "moving",
    "output",
    "report",
    "model",
    "inliers",
    "matches",
    "rmse_px",
    "loo_rmse_px",
    "seconds",
    "cpu_seconds",
    "worker",
    "error",
    "exit_code",
    "message",
)
#: RegisterConfig settings (dotted names) that do not change a registration's result (left
#: out of fingerprints).
_NOT_RESULT_FIELDS = ("output.overwrite", "output.report", "output.plot", "progress", "model")
#: SarregErrors that do not follow from the inputs and settings: a scene that failed with one
#: of these (or with an unexpected exception) is retried by the next run; one that failed with
#: any other SarregError would fail the same way again and is not (unless ``retry_failed``).
_RETRIED_ERRORS = (OutputError, ClusterError)


@dataclass(frozen=True)
class BatchJob:
    """One registration of a batch: absolute paths of its inputs and outputs."""

    index: int
    name: str
    reference: str
    moving: str
    output: str
    report: str

    @property
    def record(self) -> str:
        """Path of the scene's batch record (``NAME.batch.json``)."""
        return str(Path(self.output).with_suffix(RECORD_SUFFIX))


@dataclass
class SceneResult:
    """Outcome of one scene.

    ``status``: 'ok' (registered in this run), 'skipped' (up-to-date output of an earlier run)
    or 'failed' (in this run or, with ``this_run`` False, in an earlier run with the same
    inputs and settings and not retried). ``footprint``: GeoJSON geometry of the moving scene
    in EPSG:4326, after registration for ok/skipped scenes, from its own georeferencing for
    failed ones, or None.
    """

    index: int
    name: str
    reference: str
    moving: str
    output: str
    report: str
    status: str
    this_run: bool = True
    model: str | None = None
    inliers: int | None = None
    matches: int | None = None
    rmse_px: float | None = None
    loo_rmse_px: float | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None  # CPU time of the worker process during the scene
    worker: str | None = None
    error: str | None = None
    exit_code: int | None = None
    message: str | None = None
    fingerprint: str | None = None
    footprint: dict | None = None
    footprint_source: str | None = None
    model_loads: int | None = None  # checkpoints loaded so far by the worker process

    def row(self) -> dict[str, Any]:
        """The summary CSV row (see :data:`CSV_COLUMNS`)."""
        values = asdict(self)
        return {k: values[k] for k in CSV_COLUMNS}


@dataclass(frozen=True)
class BatchSettings:
    """How a batch runs (not what it computes: that is the :class:`RegisterConfig`).

    Attributes:
        workers: Dask worker processes of the local cluster; 0 = run the scenes one after the
            other in this process (no Dask); None = CPU cores // ``threads_per_worker``.
        threads_per_worker: PyTorch/OpenCV threads each worker uses for its scene (a worker
            registers one scene at a time).
        scheduler: address of an existing Dask scheduler (``tcp://host:port``) instead of a
            local cluster. Its workers must have sarreg installed and see the same paths.
        connect_timeout: seconds to wait for the scheduler before giving up.
        progress: progress bar over scenes.
        force: redo every scene, also those with up-to-date outputs.
        retry_failed: retry scenes that failed before with the same inputs and settings.
    """

    workers: int | None = None
    threads_per_worker: int = 1
    scheduler: str | None = None
    connect_timeout: float = 5.0
    progress: bool = True
    force: bool = False
    retry_failed: bool = False


@dataclass
class BatchSummary:
    """All scene results of a batch (in job order) and the summary files written."""

    results: list[SceneResult]
    csv_path: str
    geojson_path: str
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[SceneResult]:
        return [r for r in self.results if r.status == "failed"]

    def describe(self) -> str:
        """One line: counts per status and the summary files."""
        parts = ", ".join(f"{self.counts.get(s, 0)} {s}" for s in ("ok", "skipped", "failed"))
        return (
            f"{len(self.results)} scenes: {parts} in {self.seconds:.1f} s -> {self.csv_path}, "
            f"{self.geojson_path}"
        )


# ---------------------------------------------------------------------------------------------
# planning


def _abspath(path: str | os.PathLike, base: Path | None = None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.absolute())


def _expand(patterns: Iterable[str]) -> list[str]:
    """Paths and glob patterns -> paths, in the given order (each pattern's matches sorted).

    A plain path is kept even when it does not exist (the scene is then recorded as failed);
    a pattern that matches nothing is logged.
    """
    paths: list[str] = []
    for pattern in patterns:
        pattern = str(pattern).strip()
        if not pattern:
            continue
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if not matches:
                log.warning("no file matches %r", pattern)
            paths.extend(m for m in matches if not os.path.isdir(m))
        else:
            paths.append(pattern)
    return paths


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Paths (or glob patterns) from a list file, one per line; blank and '#' lines skipped.

    Relative paths are relative to the list file's folder.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(
            f"cannot read the scene list {p} ({getattr(err, 'strerror', None) or err})",
            "give a text file with one moving scene path per line",
        ) from err
    base = p.absolute().parent
    entries = (line.strip() for line in lines)
    return [_abspath(s, base) for s in entries if s and not s.startswith("#")]


def read_pairs_csv(path: str | os.PathLike) -> list[tuple[str, str, str | None]]:
    """(reference, moving, output or None) rows of a pairs CSV.

    Required columns ``reference`` and ``moving``; optional ``output`` (file name in the output
    folder). Column names are case-insensitive; relative paths are relative to the CSV's folder.

    Raises:
        InputFileError: the file cannot be read.
        ConfigError: a required column is missing, or a row has an empty reference/moving.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(
            f"cannot read the pairs CSV {p} ({getattr(err, 'strerror', None) or err})",
            "give a CSV file with the columns reference,moving",
        ) from err
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("reference", "moving") if c not in header]
    if missing:
        raise ConfigError(
            f"the pairs CSV {p} lacks the column(s) {', '.join(missing)} "
            f"(found: {', '.join(header) or 'no header'})",
            "its first line must name the columns reference,moving (and optionally output)",
        )
    reader.fieldnames = header
    base = p.absolute().parent
    rows = []
    for line_no, row in enumerate(reader, start=2):
        ref = (row.get("reference") or "").strip()
        mov = (row.get("moving") or "").strip()
        if not ref or not mov:
            raise ConfigError(
                f"line {line_no} of the pairs CSV {p} has an empty reference or moving path",
                "fill in both columns or remove the line",
            )
        out = (row.get("output") or "").strip() or None
        rows.append((_abspath(ref, base), _abspath(mov, base), out))
    return rows


def plan_jobs(
    out_dir: str | os.PathLike,
    *,
    reference: str | os.PathLike | None = None,
    moving: Sequence[str] = (),
    moving_list: str | os.PathLike | None = None,
    pairs_csv: str | os.PathLike | None = None,
) -> list[BatchJob]:
    """The batch's jobs, in input order, with absolute paths.

    Either ``reference`` with moving scenes (``moving`` paths/glob patterns and/or
    ``moving_list``), or ``pairs_csv``. Outputs are ``out_dir/NAME.tif`` with ``NAME`` the
    moving file's stem (or the CSV's ``output`` column), reports ``out_dir/NAME.json``. A moving
    path equal to the reference is left out; repeated pairs are run once.

    Raises:
        ConfigError: both or neither kind of input, or two scenes would write the same output.
        InputFileError: no moving scene given or matched, or a list/CSV file is unreadable.
    """
    out = Path(_abspath(out_dir))
    if pairs_csv is not None:
        if reference is not None or moving or moving_list is not None:
            raise ConfigError(
                "give either a pairs CSV or a reference with moving scenes, not both",
                "use --pairs alone, or --reference with MOVING... / --moving-list",
            )
        pairs = read_pairs_csv(pairs_csv)
        source = f"the pairs CSV {pairs_csv}"
    else:
        if reference is None:
            raise ConfigError(
                "no reference image given", "pass --reference REF with moving scenes, or --pairs"
            )
        patterns = list(moving)
        if moving_list is not None:
            patterns += read_list_file(moving_list)
        ref = _abspath(reference)
        if not os.path.isfile(ref):
            raise InputFileError(
                f"reference {ref} not found", "give an existing image with --reference"
            )
        pairs = []
        for m in _expand(patterns):
            mov = _abspath(m)
            if os.path.realpath(mov) == os.path.realpath(ref):
                log.info("leaving out the reference %s from the moving scenes", mov)
                continue
            pairs.append((ref, mov, None))
        if not patterns:
            raise InputFileError(
                "no moving scenes given", "pass MOVING paths or patterns, or --moving-list FILE"
            )
        shown = ", ".join(patterns[:3]) + (", ..." if len(patterns) > 3 else "")
        source = f"{shown}" if moving_list is None else f"{moving_list} ({shown})"
    if not pairs:
        raise InputFileError(
            f"no moving scene found: nothing matches {source}",
            "check the paths and glob patterns (the reference itself is left out)",
        )

    jobs: list[BatchJob] = []
    seen_pairs: set[tuple[str, str]] = set()
    by_output: dict[str, tuple[str, str]] = {}
    for ref, mov, name in pairs:
        if (ref, mov) in seen_pairs:
            log.info("pair %s, %s listed twice; running it once", ref, mov)
            continue
        seen_pairs.add((ref, mov))
        if name and (Path(name).name != name or name in (".", "..")):
            raise ConfigError(
                f"output {name!r} of {mov} is not a plain file name",
                "give names like scene1.tif in the output column; they go into the -o folder",
            )
        output = out / (name if name else Path(mov).stem + ".tif")
        if not output.suffix:
            output = output.with_suffix(".tif")
        key = str(output)
        if key in by_output:
            raise ConfigError(
                f"two scenes would write the same output {output.name}: "
                f"{by_output[key][1]} and {mov}",
                "give distinct file names, or (with --pairs) an output column",
            )
        by_output[key] = (ref, mov)
        jobs.append(
            BatchJob(
                index=len(jobs),
                name=output.stem,
                reference=ref,
                moving=mov,
                output=key,
                report=str(output.with_suffix(".json")),
            )
        )
    _check_inputs_not_overwritten(jobs)
    return jobs


def _check_inputs_not_overwritten(jobs: Sequence[BatchJob]) -> None:
    """Raise ConfigError when a scene's output, report or record is one of the inputs."""
    from sarreg.outputs import guard_outputs

    inputs = {os.path.realpath(p) for j in jobs for p in (j.reference, j.moving)}
    for job in jobs:
        for path in (job.output, job.report, job.record):
            if os.path.realpath(path) in inputs:
                raise ConfigError(
                    f"the batch would overwrite its input {path} with the output of {job.moving}",
                    "choose an output folder (-o) other than the inputs' folder",
                )
    # hard links, devices, links out of the folder (same guard as sarreg register)
    guard_outputs(
        [(f"{kind} of {j.moving}", p) for j in jobs
         for kind, p in (("output", j.output), ("report", j.report), ("record", j.record))],
        [(f"input of scene {j.name}", p) for j in jobs for p in (j.reference, j.moving)],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# fingerprints and resume


def model_checksum(config: RegisterConfig) -> tuple[str, str]:
    """(path, sha256) of the checkpoint ``config`` uses.

    Raises:
        CheckpointError: the checkpoint file is missing.
    """
    from sarreg.errors import CheckpointError
    from sarreg.model.checkpoint import default_model_path, file_sha256

    path = Path(config.model).expanduser() if config.model else default_model_path()
    if not path.is_file():
        raise CheckpointError(
            f"model checkpoint {path} not found", "give an existing file with --model"
        )
    return str(path.absolute()), file_sha256(path)


def result_settings(config: RegisterConfig) -> dict[str, Any]:
    """The settings of ``config`` that change a registration's result (for fingerprints)."""

    def drop(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: drop(v) for k, v in obj.items() if k != "progress"}
        if isinstance(obj, (list, tuple)):
            return [drop(v) for v in obj]
        return obj

    settings = asdict(config)
    for key in _NOT_RESULT_FIELDS:
        *groups, name = key.split(".")
        group = settings
        for g in groups:
            group = group[g]
        group.pop(name, None)
    return drop(settings)


def _file_identity(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path, "missing": True}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(job: BatchJob, settings: dict[str, Any], model_sha256: str) -> str:
    """sha256 over both inputs' path, size and modification time, the result-relevant
    settings and the model's sha256. A scene is up to date when its report carries it."""
    payload = {
        "reference": _file_identity(job.reference),
        "moving": _file_identity(job.moving),
        "settings": settings,
        "model_sha256": model_sha256,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def previous_result(job: BatchJob, fp: str, retry_failed: bool = False) -> SceneResult | None:
    """The scene's result from an earlier run with the same fingerprint, or None (run it).

    Up to date ('skipped'): the batch record says 'ok' with fingerprint ``fp``, and the output
    and the report exist with the sizes recorded there. A record of a failure with ``fp`` that
    is not to be retried -> 'failed' (``this_run`` False).
    """
    record = _read_json(job.record)
    if not record or record.get("fingerprint") != fp:
        return None
    if record.get("status") == "ok":
        if _size(job.output) != record.get("output_size"):
            return None
        if _size(job.report) != record.get("report_size"):
            return None
        status = "skipped"
    elif record.get("status") == "failed":
        if retry_failed or record.get("retry", True):
            return None
        status = "failed"
    else:
        return None
    names = {f.name for f in fields(SceneResult)} - set(_job_fields(job))
    values = {k: v for k, v in record.items() if k in names}
    values.update(status=status, this_run=False, model_loads=None)
    return SceneResult(**_job_fields(job), **values)


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _job_fields(job: BatchJob) -> dict[str, Any]:
    return {
        "index": job.index,
        "name": job.name,
        "reference": job.reference,
        "moving": job.moving,
        "output": job.output,
        "report": job.report,
    }


def _write_record(result: SceneResult, job: BatchJob, **extra: Any) -> None:
    """Write the scene's batch record (``NAME.batch.json``) atomically."""
    from sarreg.atomic import write_json_atomic

    record = {k: v for k, v in asdict(result).items() if k not in ("this_run", "model_loads")}
    record.update(extra)
    write_json_atomic(record, job.record, overwrite=True)


# ---------------------------------------------------------------------------------------------
# footprints


def _footprint_from_report(report: dict) -> tuple[dict | None, str | None]:
    """The moving scene's outline after registration, in EPSG:4326, from a report."""
    try:
        import numpy as np
        from affine import Affine
        from rasterio.crs import CRS

        from sarreg import geometry

        ref = report["reference"]
        if not ref.get("geotransform") or not ref.get("crs"):
            return None, None
        matrix = np.asarray(report["transform"]["pixel_matrix"], dtype=np.float64)
        poly = geometry.footprint_in_crs(
            Affine(*ref["geotransform"][:6]),
            CRS.from_user_input(ref["crs"]),
            tuple(report["moving"]["shape"]),
            CRS.from_user_input(FOOTPRINT_CRS),
            matrix=matrix,
        )
        return _polygon_geojson(np.asarray(poly.exterior.coords)), "registered"
    except Exception as err:  # a summary never fails on a footprint
        log.debug("no footprint from the report: %s", err)
        return None, None


def _footprint_from_file(path: str) -> tuple[dict | None, str | None]:
    """The moving scene's outline from its own georeferencing, in EPSG:4326."""
    try:
        from rasterio.crs import CRS

        from sarreg import geometry, io

        info = io.raster_info(path)
        if info.transform is None or info.crs is None:
            return None, None
        poly = geometry.footprint_in_crs(
            info.transform, info.crs, info.shape, CRS.from_user_input(FOOTPRINT_CRS)
        )
        import numpy as np

        return _polygon_geojson(np.asarray(poly.exterior.coords)), "georeferencing"
    except Exception as err:  # unreadable scene: no footprint
        log.debug("no footprint for %s: %s", path, err)
        return None, None


def _polygon_geojson(xy) -> dict:
    """GeoJSON polygon of a ring of (lon, lat), counter-clockwise as RFC 7946 recommends."""
    from shapely.geometry import Polygon
    from shapely.geometry.polygon import orient

    ring = orient(Polygon(xy), sign=1.0).exterior.coords
    return {"type": "Polygon", "coordinates": [[[round(x, 8), round(y, 8)] for x, y in ring]]}


# ---------------------------------------------------------------------------------------------
# the task


def _set_threads(threads: int) -> None:
    from sarreg.model.runtime import set_threads

    set_threads(threads)


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _model_loads() -> int | None:
    from sarreg import pipeline

    cached = getattr(pipeline, "_load_model_cached", None)
    info = getattr(cached, "cache_info", None)
    return info().misses if info else None


def run_scene(
    job: BatchJob, config: RegisterConfig, fp: str, threads: int = 1, model_sha256: str = ""
) -> SceneResult:
    """Register one scene (the Dask task). Never raises for a scene's failure: returns it.

    Writes the output and the report (by :func:`sarreg.pipeline.register`), then the batch
    record. On failure, an output or report written by this attempt is removed and the record
    holds the error.
    """
    from sarreg.pipeline import register

    t0, c0 = time.perf_counter(), time.process_time()
    worker = _worker_name()
    before = {p: _stat(p) for p in (job.output, job.report)}
    try:
        _set_threads(threads)
        cfg = with_values(
            config,
            {"output.overwrite": True, "output.report": job.report, "output.plot": None,
             "progress": False},
        )  # fmt: skip
        res = register(job.reference, job.moving, job.output, cfg)
        geometry, source = _footprint_from_report(res.report)
        out = SceneResult(
            **_job_fields(job),
            status="ok",
            model=res.model,
            inliers=res.n_inliers,
            matches=res.n_matches,
            rmse_px=res.rmse,
            loo_rmse_px=res.loo_rmse,
            seconds=round(time.perf_counter() - t0, 3),
            cpu_seconds=round(time.process_time() - c0, 3),
            worker=worker,
            fingerprint=fp,
            footprint=geometry,
            footprint_source=source,
        )
        _write_record(
            out,
            job,
            output_size=os.path.getsize(job.output),
            report_size=os.path.getsize(job.report),
            model_sha256=model_sha256,
        )
    except Exception as err:  # every failure of one scene is recorded; the batch goes on
        for path, stat in before.items():
            if _stat(path) != stat:  # written by this attempt: remove the unfinished pair
                _remove(path)
        sarreg_err = isinstance(err, SarregError)
        message = str(err) if sarreg_err else f"{type(err).__name__}: {err}"
        log.info("scene %s failed: %s", job.name, message)
        geometry, source = _footprint_from_file(job.moving)
        out = SceneResult(
            **_job_fields(job),
            status="failed",
            error=type(err).__name__,
            exit_code=err.exit_code if sarreg_err else 1,
            message=message,
            seconds=round(time.perf_counter() - t0, 3),
            cpu_seconds=round(time.process_time() - c0, 3),
            worker=worker,
            fingerprint=fp,
            footprint=geometry,
            footprint_source=source,
        )
        try:
            retry = not sarreg_err or isinstance(err, _RETRIED_ERRORS)
            _write_record(out, job, retry=retry, model_sha256=model_sha256)
        except Exception as rec_err:  # e.g. the folder became unwritable
            log.warning("cannot write %s: %s", job.record, rec_err)
    out.model_loads = _model_loads()
    return out


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("cannot remove %s: %s", path, err)


def _remove_temporaries(job: BatchJob) -> None:
    """Remove temporary files that an interrupted attempt at ``job`` left (see sarreg.atomic)."""
    for path in (Path(job.output), Path(job.report), Path(job.record)):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.sarreg-*"):
            _remove(str(tmp))


def _lost_task(job: BatchJob, fp: str, err: BaseException) -> SceneResult:
    """Result of a task that did not return (worker died, cluster lost)."""
    return SceneResult(
        **_job_fields(job),
        status="failed",
        error=type(err).__name__,
        exit_code=1,
        message=f"the Dask task did not finish: {type(err).__name__}: {err}",
        fingerprint=fp,
    )


# ---------------------------------------------------------------------------------------------
# running


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check that it is writable.

    Raises:
        OutputError: it cannot be created or written.
    """
    from sarreg.atomic import check_output_path, make_output_folder

    out = make_output_folder(_abspath(out_dir), "choose another -o folder")
    check_output_path(out / SUMMARY_CSV, overwrite=True)
    return out


def _connect_scheduler(settings: BatchSettings):
    """A client of the scheduler at ``settings.scheduler``. Raises ClusterError."""
    from dask.distributed import Client

    address = settings.scheduler
    try:
        return Client(address, timeout=f"{settings.connect_timeout}s")
    except (ValueError, TypeError) as err:
        raise ClusterError(
            f"{address!r} is not a Dask scheduler address ({err})",
            "give it as tcp://host:port, e.g. --scheduler tcp://10.0.0.5:8786",
        ) from err
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within "
            f"{settings.connect_timeout:g} s ({type(err).__name__})",
            "check the address and that the scheduler runs, or leave out --scheduler to use "
            "a local cluster",
        ) from err


def _start_local_cluster(settings: BatchSettings, n_tasks: int):
    """(client, cluster): a LocalCluster of worker processes. Raises ClusterError."""
    from dask.distributed import Client, LocalCluster

    n = settings.workers or max(1, (os.cpu_count() or 1) // settings.threads_per_worker)
    n = max(1, min(n, n_tasks))
    try:
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,  # one scene at a time per worker; its threads go to torch
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    except Exception as err:
        raise ClusterError(
            f"cannot start a local Dask cluster of {n} workers ({type(err).__name__}: {err})",
            "try fewer --workers, or --workers 0 to run in this process",
        ) from err
    try:
        client = Client(cluster, timeout=f"{max(settings.connect_timeout, 30.0)}s")
    except Exception as err:
        cluster.close()
        raise ClusterError(
            f"cannot connect to the local Dask cluster ({type(err).__name__}: {err})",
            "try --workers 0 to run in this process",
        ) from err
    return client, cluster


def run_batch(
    jobs: Sequence[BatchJob],
    config: RegisterConfig,
    out_dir: str | os.PathLike,
    settings: BatchSettings | None = None,
) -> BatchSummary:
    """Run ``jobs`` (see the module docstring) and write the summary CSV and GeoJSON.

    Raises (before any registration): OutputError (output folder not writable),
    ClusterError (scheduler unreachable, cluster not started), CheckpointError (model
    missing), ConfigError (bad settings). Failures of single scenes are recorded in the
    results, not raised.
    """
    from sarreg.pipeline import validate_config

    settings = settings or BatchSettings()
    t0 = time.perf_counter()
    if settings.threads_per_worker < 1:
        raise ConfigError(
            f"--threads-per-worker {settings.threads_per_worker} is not positive",
            "give 1 or more",
        )
    if settings.workers is not None and settings.workers < 0:
        raise ConfigError(f"--workers {settings.workers} is negative", "give 0 or more")
    validate_config(config)
    out = check_output_folder(out_dir)

    results: dict[int, SceneResult] = {}
    pending: list[tuple[BatchJob, str]] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_dask())
        client = None
        if settings.scheduler:  # first, so that a wrong address fails within seconds
            client = _connect_scheduler(settings)
            stack.callback(client.close)

        _, model_sha = model_checksum(config)
        rsettings = result_settings(config)
        for job in jobs:
            fp = fingerprint(job, rsettings, model_sha)
            prev = None if settings.force else previous_result(job, fp, settings.retry_failed)
            if prev is not None:
                results[job.index] = prev
            else:
                _remove_temporaries(job)  # left by an interrupted earlier run
                pending.append((job, fp))
        if results:
            log.info("%d of %d scenes up to date or failed before", len(results), len(jobs))

        if pending and client is None and settings.workers != 0:
            # after the workers stop (callbacks run last-in first-out): clean up after the
            # scenes that did not finish
            stack.callback(_clean_unfinished, pending, results)
            client, cluster = _start_local_cluster(settings, len(pending))
            stack.callback(cluster.close)
            stack.callback(client.close)

        from tqdm import tqdm

        bar = stack.enter_context(
            tqdm(
                total=len(jobs),
                initial=len(results),
                unit="scene",
                desc="batch",
                disable=not settings.progress,
                dynamic_ncols=True,
            )
        )
        if pending and client is None:
            from sarreg.model.runtime import threads_restored

            with threads_restored():
                for job, fp in pending:
                    results[job.index] = run_scene(
                        job, config, fp, settings.threads_per_worker, model_sha
                    )
                    bar.update(1)
        elif pending:
            _run_tasks(client, pending, config, settings, model_sha, results, bar)

    ordered = [results[job.index] for job in jobs]
    counts = {s: sum(r.status == s for r in ordered) for s in ("ok", "skipped", "failed")}
    csv_path, geojson_path = write_summary(ordered, out)
    return BatchSummary(
        results=ordered,
        csv_path=str(csv_path),
        geojson_path=str(geojson_path),
        seconds=time.perf_counter() - t0,
        counts=counts,
    )


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Keep Dask's INFO chatter (cluster start/stop) out of the log unless sarreg logs DEBUG."""
    logger = logging.getLogger("distributed")
    old = logger.level
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _clean_unfinished(pending, results) -> None:
    for job, _ in pending:
        if job.index not in results:
            _remove_temporaries(job)


def _run_tasks(client, pending, config, settings, model_sha, results, bar) -> None:
    """Submit one task per pending scene and collect the results as they complete."""
    from dask.distributed import as_completed

    futures = {}
    for job, fp in pending:
        fut = client.submit(
            run_scene,
            job,
            config,
            fp,
            settings.threads_per_worker,
            model_sha,
            key=f"sarreg-scene-{job.index}-{fp[:12]}",
            pure=False,
        )
        futures[fut] = (job, fp)
    for fut in as_completed(list(futures)):
        job, fp = futures[fut]
        try:
            results[job.index] = fut.result()
        except Exception as err:  # worker died / cluster lost: record, go on
            log.warning("scene %s: task failed: %s", job.name, err)
            results[job.index] = _lost_task(job, fp, err)
            _remove_temporaries(job)
        bar.update(1)


# ---------------------------------------------------------------------------------------------
# summary


def write_summary(results: Sequence[SceneResult], out_dir: Path) -> tuple[Path, Path]:
    """Write ``batch_summary.csv`` and ``batch_summary.geojson`` atomically."""
    from sarreg.atomic import write_json_atomic, write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in r.row().items()})
    csv_path = write_text_atomic(buf.getvalue(), out_dir / SUMMARY_CSV, overwrite=True)

    features = []
    for r in results:
        props = r.row()
        props["footprint_source"] = r.footprint_source
        props["footprint_crs"] = FOOTPRINT_CRS
        features.append({"type": "Feature", "geometry": r.footprint, "properties": props})
    collection = {
        "type": "FeatureCollection",
        "description": "sarreg batch summary: one feature per scene; geometry = outline of the "
        "moving scene in EPSG:4326 (longitude, latitude), after registration for ok/skipped "
        "scenes ('footprint_source': 'registered'), from its own georeferencing for failed "
        "ones ('georeferencing'), null when unknown",
        "features": features,
    }
    geojson_path = write_json_atomic(collection, out_dir / SUMMARY_GEOJSON, overwrite=True)
    return csv_path, geojson_path
