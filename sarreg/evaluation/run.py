"""Run methods on a benchmark: per-pair metrics and per-method summaries.

For every pair (read once) and every method: keypoints of both images (timed as extraction),
mutual nearest-neighbour matches (matching), and the transform by
:func:`sarreg.geometry.fit_transform` on the matches (estimation; the same RANSAC and least
squares for every method; model from ``RunConfig.model``, else the pair's, else affine). Then
MMA@1..10, repeatability@3 and the registration RMSE over a grid of the overlap
(:mod:`sarreg.evaluation.metrics`). A method that fails on a pair (no keypoints, too few
matches or inliers, an error inside the method) gets ``rmse = inf``: it counts as a failure,
is reported, and the run goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarreg.errors import BenchmarkError, SarregError
from sarreg.evaluation.bench import BenchPair, check_files, load_ground_truth, read_benchmark
from sarreg.evaluation.methods import Method, PreparedImage, make_methods, prepare_image
from sarreg.evaluation.metrics import (
    SUCCESS_THRESHOLDS,
    THRESHOLDS,
    grid_points,
    match_errors,
    mma_curve,
    registration_rmse,
    repeatability,
    success_rates,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Settings of a benchmark run.

    Attributes:
        methods: method names (see :mod:`sarreg.evaluation.methods`).
        max_keypoints: keypoints per image for every keypoint method.
        model: transform model estimated for every pair; None = the pair's ``model``, else
            'affine'.
        ransac_threshold: inlier threshold of ``fit_transform``, reference px.
        seed: RANSAC seed.
        grid_step: spacing of the RMSE grid, moving px.
        skip_invalid: leave pairs with missing/bad files out (reported) instead of stopping.
    """

    methods: tuple[str, ...] = ("sarreg", "sift", "orb", "sarsift", "phasecorr")
    max_keypoints: int = 2000
    model: str | None = None
    ransac_threshold: float = 3.0
    seed: int = 0
    grid_step: int = 8
    skip_invalid: bool = False


@dataclass
class EvalResult:
    """Outcome of :func:`run_benchmark`.

    Attributes:
        records: one dict per (pair, method) (see :func:`_evaluate_one`).
        summary: one dict per method (see :func:`summarize`).
        skipped: messages of pairs left out (``skip_invalid``).
        methods: ``[(name, label)]`` in run order.
    """

    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    methods: list[tuple[str, str]] = field(default_factory=list)


def validate_benchmark(pairs: list[BenchPair], skip_invalid: bool) -> tuple[list, list[str]]:
    """Check files and dense ground-truth shapes; returns ``(good pairs, problems)``.

    Raises:
        BenchmarkError: a problem and not ``skip_invalid``, or no usable pair.
    """
    from sarreg.io import raster_info

    good, problems = [], []
    for p in pairs:
        issues = check_files(p)
        if not issues and p.displacement is not None:
            import rasterio

            from sarreg.evaluation.bench import quiet_rasterio

            try:
                with quiet_rasterio(), rasterio.open(p.displacement) as ds:
                    shape = (ds.count, ds.height, ds.width)
                mov = raster_info(p.moving).shape
                if shape != (2, *mov):
                    issues.append(
                        f"{p.name}: displacement has shape {shape}, expected (2, {mov[0]}, "
                        f"{mov[1]}) (dx, dy on the moving grid)"
                    )
            except (rasterio.errors.RasterioError, SarregError) as err:
                issues.append(f"{p.name}: cannot read {p.displacement} or the moving image: {err}")
        if issues:
            problems.extend(issues)
        else:
            good.append(p)
    if problems and not skip_invalid:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise BenchmarkError(
            problems[0] + more,
            "fix the benchmark, or pass --skip-invalid to leave those pairs out",
        )
    for msg in problems:
        log.warning("skipping: %s", msg)
    if not good:
        raise BenchmarkError("no usable pair in the benchmark", "fix the listed problems")
    return good, problems


def run_benchmark(
    bench: str | Path,
    config: RunConfig = RunConfig(),
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate ``config.methods`` on every pair of the benchmark at ``bench``.

    Args:
        bench: benchmark folder or index file (:mod:`sarreg.evaluation.bench`).
        config: :class:`RunConfig`.
        progress: called with a one-line status after each pair.

    Raises:
        BenchmarkError: unreadable benchmark (see :func:`validate_benchmark`).
        ConfigError / CheckpointError: bad method names or checkpoint.
    """
    methods = make_methods(list(config.methods), config.max_keypoints)
    pairs, skipped = validate_benchmark(read_benchmark(bench), config.skip_invalid)
    records: list[dict[str, Any]] = []
    for i, pair in enumerate(pairs):
        try:
            ref = prepare_image(pair.reference)
            mov = prepare_image(pair.moving)
            gt = load_ground_truth(pair, mov.shape)
        except SarregError as err:
            if not config.skip_invalid:
                raise BenchmarkError(
                    f"{pair.name}: {err}", "fix the pair, or pass --skip-invalid"
                ) from err
            log.warning("skipping %s: %s", pair.name, err)
            skipped.append(f"{pair.name}: {err}")
            continue
        ref_ov, mov_ov = gt.overlap_masks(ref.shape, mov.shape, ref.valid, mov.valid)
        grid = grid_points(mov_ov, config.grid_step)
        for method in methods:
            rec = _evaluate_one(method, pair, ref, mov, gt, ref_ov, mov_ov, grid, config)
            records.append(rec)
            if rec["status"] != "ok":
                log.warning("%s on %s: %s", method.label, pair.name, rec["status"])
        if progress is not None:
            done = [r for r in records if r["pair"] == pair.name]
            status = ", ".join(f"{r['method']} {_fmt_record(r)}" for r in done)
            progress(f"[{i + 1}/{len(pairs)}] {pair.name}: {status}")
    names = [(m.name, m.label) for m in methods]
    return EvalResult(records, summarize(records, names), skipped, names)


def _fmt_rmse(v: float) -> str:
    return "failed" if not math.isfinite(v) else f"{v:.2f} px"


def _fmt_record(rec: dict[str, Any]) -> str:
    """RMSE of a record, with predicted against true error where the method estimates it."""
    out = _fmt_rmse(rec["rmse"])
    if rec.get("predicted_error") is not None and rec.get("true_error") is not None:
        out += f" (error predicted {rec['predicted_error']:.2f} / true {rec['true_error']:.2f} px)"
    return out


def _evaluate_one(
    method: Method,
    pair: BenchPair,
    ref: PreparedImage,
    mov: PreparedImage,
    gt,
    ref_ov: np.ndarray,
    mov_ov: np.ndarray,
    grid: np.ndarray,
    config: RunConfig,
) -> dict[str, Any]:
    """One method on one pair -> record dict (JSON-ready)."""
    import cv2

    from sarreg.geometry import fit_transform

    model = config.model or pair.model or "affine"
    rec: dict[str, Any] = {
        "pair": pair.name, "method": method.name, "label": method.label, "model": model,
        "tags": pair.tags, "status": "ok", "keypoints_ref": None, "keypoints_mov": None,
        "matches": None, "inliers": None, "mma": None, "repeatability3": None,
        "rmse": float("inf"), "matrix": None,
        "time_extract": 0.0, "time_match": 0.0, "time_estimate": 0.0,
        "predicted_error": None, "true_error": None, "hypothesis": None,
    }  # fmt: skip
    errors = (SarregError, cv2.error, ValueError, RuntimeError, np.linalg.LinAlgError)
    matrix = None
    try:
        if hasattr(method, "register_pair"):  # the whole registration path
            t0 = time.perf_counter()
            try:
                out = method.register_pair(ref, mov, model, pair.tags)
            finally:
                rec["time_estimate"] = time.perf_counter() - t0
            matrix = out["matrix"]
            rec["matches"], rec["inliers"] = out["matches"], out["inliers"]
            rec["predicted_error"] = _none_if_nan(out["predicted_error"])
            rec["hypothesis"] = out["hypothesis"]
        elif method.direct:
            t0 = time.perf_counter()
            matrix = method.estimate(ref, mov)
            rec["time_estimate"] = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            kr = method.describe(ref)
            km = method.describe(mov)
            t1 = time.perf_counter()
            rec["time_extract"] = t1 - t0
            rec["keypoints_ref"], rec["keypoints_mov"] = len(kr), len(km)
            rec["repeatability3"] = _none_if_nan(
                repeatability(kr.xy, km.xy, gt.map, ref_ov, mov_ov, 3.0)
            )
            t1 = time.perf_counter()  # the metric is not the method's time
            xy_ref, xy_mov = method.match(kr, km)
            t2 = time.perf_counter()
            rec["time_match"] = t2 - t1
            rec["matches"] = len(xy_ref)
            err = match_errors(xy_ref, xy_mov, gt.map)
            rec["mma"] = [float(v) for v in mma_curve(err, THRESHOLDS)]
            try:
                fit = fit_transform(
                    xy_mov, xy_ref, model, config.ransac_threshold, seed=config.seed
                )
                matrix = fit.matrix
                rec["inliers"] = fit.n_inliers
            finally:
                rec["time_estimate"] = time.perf_counter() - t2
    except errors as err:
        rec["status"] = f"failed: {err}"
    if matrix is not None:
        rec["matrix"] = np.asarray(matrix, np.float64).tolist()
        rec["rmse"] = registration_rmse(matrix, gt.map, grid)
        if gt.matrix is not None and rec["predicted_error"] is not None:
            from sarreg.uncertainty import true_error

            rec["true_error"] = _none_if_nan(true_error(matrix, gt.matrix, mov.shape))
    rec["time_total"] = rec["time_extract"] + rec["time_match"] + rec["time_estimate"]
    return rec


def _none_if_nan(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def error_ratio(rec: dict[str, Any]) -> float | None:
    """Predicted over true error (both at the moving image's corners and centre) of one
    record, or None where either is missing or the true error is 0."""
    p, t = rec.get("predicted_error"), rec.get("true_error")
    if p is None or t is None or not (math.isfinite(p) and math.isfinite(t)) or t <= 0:
        return None
    return float(p / t)


def error_within_2x(records: list[dict[str, Any]], threshold: float = 3.0) -> float | None:
    """Share of the successful records (``rmse <= threshold``) whose predicted error lies
    within a factor of 2 of the true error; None when no record has a predicted error."""
    ok = [r for r in records if math.isfinite(r["rmse"]) and r["rmse"] <= threshold]
    ratios = [error_ratio(r) for r in ok if r.get("predicted_error") is not None]
    if not ratios:
        return None
    return float(np.mean([q is not None and 0.5 <= q <= 2.0 for q in ratios]))


def summarize(records: list[dict[str, Any]], methods: list[tuple[str, str]]) -> list[dict]:
    """One row per method: mean MMA@1..10 over pairs (keypoint methods), mean keypoints,
    matches and repeatability@3, median RMSE over all pairs (failures = inf), mean RMSE over
    the pairs with an estimate, success rates @1/3/5 px, failures, mean times per pair (s),
    and for methods with an error estimate the share of successful pairs whose predicted
    error is within 2x of the true one (:func:`error_within_2x`)."""
    rows = []
    for name, label in methods:
        recs = [r for r in records if r["method"] == name]
        if not recs:
            continue
        rmse = np.array([r["rmse"] for r in recs], np.float64)
        finite = rmse[np.isfinite(rmse)]
        row: dict[str, Any] = {"method": name, "label": label, "pairs": len(recs)}
        curves = [r["mma"] for r in recs if r["mma"] is not None]
        keypoint_method = any(r["keypoints_ref"] is not None for r in recs) or bool(curves)
        for k, t in enumerate(THRESHOLDS):
            row[f"mma@{t}"] = (
                float(np.mean([c[k] if c is not None else 0.0 for c in (r["mma"] for r in recs)]))
                if keypoint_method
                else None
            )
        for key, src in (("keypoints", None), ("matches", "matches"), ("inliers", "inliers")):
            if src is None:
                vals = [
                    0.5 * (r["keypoints_ref"] + r["keypoints_mov"])
                    for r in recs
                    if r["keypoints_ref"] is not None
                ]
            else:
                vals = [r[src] or 0 for r in recs] if keypoint_method else []
            row[key] = float(np.mean(vals)) if vals else None
        reps = [r["repeatability3"] for r in recs if r["repeatability3"] is not None]
        row["repeatability@3"] = float(np.mean(reps)) if reps else None
        row["rmse_median"] = float(np.median(rmse))
        row["rmse_mean"] = float(np.mean(finite)) if finite.size else float("inf")
        row["registered"] = int(finite.size)
        row["failures"] = int(
            sum(r["status"] != "ok" or not math.isfinite(r["rmse"]) for r in recs)
        )
        for t, v in success_rates(rmse, SUCCESS_THRESHOLDS).items():
            row[f"success@{t:g}"] = v
        for part in ("extract", "match", "estimate", "total"):
            row[f"time_{part}"] = float(np.mean([r[f"time_{part}"] for r in recs]))
        row["error_within_2x"] = error_within_2x(recs)
        rows.append(row)
    return rows
