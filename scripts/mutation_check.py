"""Mutation testing of sarreg's core modules with cosmic-ray, each against its own tests.

Run by developers before closing a change to one of these modules (not in CI: it runs the
selected tests once per mutant):

    python scripts/mutation_check.py geometry matching          # every mutant of both
    python scripts/mutation_check.py geometry --sample 80       # 80 mutants drawn (seed 0)
    python scripts/mutation_check.py --list                     # modules and their tests

Each mutant (one operator at one place: ``<`` -> ``<=``, ``+`` -> ``-``, ``True`` ->
``False``, a number changed, a statement removed, ...) is applied to a copy of the working
tree in a temporary folder (the tree itself is never touched), and the module's test selection
runs with ``pytest -x``: a failure kills the mutant, a pass lets it survive, a run past the
timeout counts as killed; a mutant inside a type annotation (never evaluated, the modules use
``from __future__ import annotations``) is counted as equivalent without running it. The
survival rate is survived / (killed + survived). Prints a table per module (killed, survived,
incompetent, equivalent, survival rate) and writes ``--out`` (JSON) with the diff of every
surviving mutant to review: some are equivalent (no behaviour can tell them apart), the others
want a test.

Test selections are pytest arguments: files, node ids (``file::test``) and ``-k``/``-m``
expressions, chosen so that a sample of 30-40 mutants runs in about 15 minutes on one core
(unit tests on small arrays, a tiny random-weight network, no whole-CLI runs where a function
call checks the same behaviour).

Equivalent mutants: a survivor that no behaviour can tell apart from the original (a tolerance
that no input reaches, ``h >> 1`` against ``h // 2`` for a non-negative int...) is annotated in
:data:`EQUIVALENT` with a one-line reason, keyed by function, original line and mutated line
(not by line number, which moves as the module changes). Annotated mutants still run; one that
survives counts in the raw rate and is left out of the second rate, one that is killed is
reported as a stale annotation. The table gives both rates:

    raw = survived / (killed + survived)
    excl. equivalent = (survived - annotated) / (killed + survived - annotated)

``--rerun REPORT`` runs only the survivors listed in an earlier ``--out`` file (quick check of
new tests); the survival table is then over those mutants alone.

Needs ``pip install cosmic-ray`` (the ``dev`` extra installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: module -> (file, tests that check its behaviour)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "geometry": (
        "sarreg/geometry.py",
        (
            "tests/test_plausibility.py",
            "tests/test_geometry.py",
            "tests/test_properties.py",
            "tests/test_prior.py",
        ),
    ),
    "matching": ("sarreg/matching.py", ("tests/test_matching.py", "tests/test_prior.py")),
    "features": (
        "sarreg/features.py",
        (
            "tests/test_feature_levels.py",
            "tests/test_features.py",
            "tests/test_whitening_in_use.py",
            "tests/test_properties.py::test_extraction_does_not_depend_on_the_tiling",
        ),
    ),
    "model": (  # random-weight networks, no shipped model, no CLI runs
        "sarreg/model/r2d2.py",
        (
            "tests/test_model_edges.py",
            "tests/test_model_inference.py",
            "tests/test_naver_reference.py",
            "tests/test_checkpoint.py",
            "tests/test_whitening.py",
            "-k",
            "not cli and not shipped",
        ),
    ),
    "whitening": (
        "sarreg/model/whitening.py",
        ("tests/test_whitening.py", "tests/test_whitening_in_use.py"),
    ),
    "pipeline": (
        "sarreg/pipeline.py",
        (
            "tests/test_pipeline.py",
            "tests/test_prior.py",
            "tests/test_outputs_checked_first.py",
            "tests/test_stages.py",
            "tests/test_extract_file.py",
        ),
    ),
    "atomic": (
        "sarreg/atomic.py",
        ("tests/test_atomic.py", "tests/test_properties.py", "tests/test_outputs_checked_first.py"),
    ),
    "outputs": (  # the output guard
        "sarreg/outputs.py",
        ("tests/test_output_guard.py", "tests/test_outputs_checked_first.py"),
    ),
    # pipeline stages (inputs -> coarse -> tiles -> estimate -> verify -> output, report): the
    # stage tests on small crops and in-memory files, not the whole-scene or SIGTERM runs
    "inputs": (
        "sarreg/inputs.py",
        (
            "tests/test_inputs_units.py",
            "tests/test_pyramid_plan.py",
            "tests/test_stages.py::test_vsimem_moving_image_registers_end_to_end",
            "tests/test_outputs_checked_first.py",
            "tests/test_refine.py",
        ),
    ),
    "coarse": (
        "sarreg/coarse.py",
        (
            "tests/test_stages.py::test_vsimem_moving_image_registers_end_to_end",
            "tests/test_stages.py::test_tiles_only_when_the_coarse_read_is_decimated_beyond_the_tiles",
            "tests/test_prior.py",
            "tests/test_stages.py::test_coarse_only_and_tiled_give_the_same_transform",
            "tests/test_stages.py::test_moving_image_with_too_few_keypoints_is_refused_as_featureless",
            "tests/test_verify_search.py::test_rotated_right_angles_register[90]",
            "tests/test_verify_search.py::test_mirrored_pair_needs_allow_reflection",
            "tests/test_verify_search.py::test_bad_georeferencing_prior[shift150]",
            "tests/test_verify_search.py::test_scaled_quarter_registers",
            "tests/test_verify_search.py::test_verified_scale_outside_the_range_is_refused_at_once",
        ),
    ),
    "tiles": (
        "sarreg/tiles.py",
        (
            "tests/test_stages.py",
            "tests/test_scene.py::test_plan_tiles_spread_over_overlap_even_windows",
            "tests/test_scene.py::test_overlap_uses_both_footprints",
        ),
    ),
    "estimate": (
        "sarreg/estimate.py",
        (
            "tests/test_estimate_units.py",
            "tests/test_refine.py",
            "tests/test_uncertainty.py",
            "tests/test_prior.py",
        ),
    ),
    "verify": (
        "sarreg/verify.py",
        ("tests/test_verify_units.py", "tests/test_uncertainty.py", "tests/test_verify_search.py"),
    ),
    "search": (  # hypotheses and Fourier-Mellin proposals directly, then small-crop searches
        "sarreg/search.py",
        (
            "tests/test_search_units.py",
            "tests/test_search.py::test_hypothesis_at_any_angle_maps_pixels_as_its_matrix_says",
            "tests/test_search.py::test_size_ratio_ranks_the_scale_of_the_image_sizes_first",
            "tests/test_search.py::test_fourier_mellin_proposes_the_rotation_and_scale",
            "tests/test_verify_search.py::test_rotated_right_angles_register",
            "tests/test_verify_search.py::test_mirrored_pair_needs_allow_reflection",
            "tests/test_verify_search.py::test_common_case_does_not_search",
        ),
    ),
    "uncertainty": (
        "sarreg/uncertainty.py",
        ("tests/test_uncertainty_units.py", "tests/test_uncertainty.py"),
    ),
    "output": (
        "sarreg/output.py",
        (
            "tests/test_output_stage.py",
            "tests/test_outputs_checked_first.py",
            "tests/test_gis.py",
            "tests/test_stages.py::test_vsimem_moving_image_registers_end_to_end",
        ),
    ),
    "report": ("sarreg/report.py", ("tests/test_report.py", "tests/test_gis.py")),
}


@dataclass(frozen=True)
class Equivalent:
    """A surviving mutant that no input can tell from the original: ``function`` (cosmic-ray's
    definition name), the original and the mutated source line (stripped), and why."""

    function: str
    original: str
    mutated: str
    why: str


#: module -> its annotated equivalent mutants (reviewed by hand; see the module docstring)
EQUIVALENT: dict[str, tuple[Equivalent, ...]] = {
    "report": (
        Equivalent(
            "transform_entry",
            'info["moving_centre_to_reference_px"] = forward(centre)[0].tolist()',
            'info["moving_centre_to_reference_px"] = forward(centre)[ -1].tolist()',
            "centre holds one point, so its first row is its last",
        ),
        Equivalent(
            "checkerboard",
            "tj = (np.arange(w) * tiles) // max(w, 1)",
            "tj = (np.arange(w) * tiles) // max(w, 2)",
            "differs only at w == 1, where the one column is column 0: 0 // 1 == 0 // 2",
        ),
        Equivalent(
            "checkerboard",
            "tj = (np.arange(w) * tiles) // max(w, 1)",
            "tj = (np.arange(w) * tiles) // max(w, 0)",
            "differs only at w == 0, where np.arange(0) is empty and so is the quotient",
        ),
        Equivalent(
            "to_dict",
            '"nonfinite_pixels": int(getattr(self.raster, "nonfinite", 0)),',
            '"nonfinite_pixels": int(getattr(self.raster, "nonfinite", -1)),',
            "the raster is a sarreg.io.Raster, which always has nonfinite (default 0)",
        ),
        Equivalent(
            "build_report",
            '"windowed": coarse is not None and coarse.get("tiles_used", 0) > 0,',
            '"windowed": coarse is not None and coarse.get("tiles_used", 0) != 0,',
            "tiles_used is a count, never negative",
        ),
    ),
    "inputs": (
        Equivalent(
            "work_sizes",
            "if prior_scale is not None and prior_scale > 0:",
            "if prior_scale is not None and prior_scale != 0:",
            "prior_scale is a square root (sarreg.inputs.prior_scale), never negative",
        ),
    ),
    "search": (
        Equivalent(
            "_spectrum",
            "y0, x0 = (size - band.shape[0]) // 2, (size - band.shape[1]) // 2",
            "y0, x0 = (size - band.shape[0]) // 2, (size % band.shape[1]) // 2",
            "(size % w) // 2 + w <= size for w <= size, so the band still fits, and a Fourier "
            "magnitude does not depend on where the band sits in the zero padding",
        ),
        Equivalent(
            "fourier_mellin",
            "near = 90.0 * round(a / 90.0)",
            "near = 90.0 * round(a / 91.0)",
            "for a in [0, 360) the two roundings differ only between 45 and 45.5 deg (and "
            "135-136.5, 225-227.5, 315-318.5), where neither nearest right angle is within "
            "ROTATION_SNAP, so nothing is snapped either way",
        ),
    ),
    "tiles": (
        Equivalent(
            "register_tile",
            "f_ref = extract(ctx.loaded.net, img_r, kpm_r, replace(xcfg, refine_radius=0))",
            "f_ref = extract(ctx.loaded.net, img_r, kpm_r, replace(xcfg, refine_radius= 1))",
            "the reference tile's local descriptors are never read: matching and refinement use "
            "the moving tile's (match_guided, refine_keypoints); only time and memory change",
        ),
        Equivalent(
            "orientation",
            "if hyp is None or (hyp.rotation_deg == 0 and not hyp.flip):",
            "if hyp is None or (hyp.rotation_deg == 1 and not hyp.flip):",
            "the orientation it then returns for an unturned hypothesis, Hypothesis(0, False), "
            "is the identity: apply() returns the tile as it is and linear() is eye(3)",
        ),
        Equivalent(
            "refine_with_tiles",
            "ref_t = ctx.ref_info.transform if ctx.georef else None",
            "ref_t = ctx.ref_info.transform if not ctx.georef else None",
            "overlap_in_reference_pixels gives the same polygon in map units (through the "
            "reference's affine geotransform) as in reference pixels, up to rounding",
        ),
        Equivalent(
            "register_tile",
            "r_inv = np.eye(3)",
            "r_inv = np.eye( 4)",
            "without an orientation r_inv only enters apply_matrix, which reads m[:2, :2], "
            "m[:2, 2], m[2, :2] and m[2, 2]: the same entries in eye(3) and eye(4)",
        ),
        Equivalent(
            "refine_with_tiles",
            "sum(r.status is TileStatus.used for r in records),",
            "sum(r.status == TileStatus.used for r in records),",
            "a member of an Enum compares equal only to itself: == and is agree on statuses",
        ),
    ),
    "uncertainty": (
        Equivalent(
            "_covariance",
            "sc = float(np.sqrt(((src - c) ** 2).sum(axis=1).mean())) or 1.0",
            "sc = float(np.sqrt(((src - c) % 2).sum(axis=1).mean())) or 1.0",
            "sc only conditions the least squares: the models' designs are linear in the "
            "scaled coordinates, so any positive scale gives the same predicted variance",
        ),
        Equivalent(
            "_alignment_field",
            "sc = float(np.sqrt(((xy - c) ** 2).sum(axis=1).mean())) or 1.0",
            "sc = float(np.sqrt(((xy - c) + 2).sum(axis=1).mean())) or 1.0",
            "xy - c has zero mean, so the mutant's sc is sqrt(4) = 2: a positive scale, which "
            "only conditions the least squares (as in _covariance)",
        ),
        Equivalent(
            "_alignment_field",
            "params, *_ = np.linalg.lstsq(a2, d.reshape(-1), rcond=None)",
            "params, *_ = np.linalg.lstsq(a2, d.reshape(- 2), rcond=None)",
            "numpy takes any negative size in reshape as the inferred one (-2 == -1)",
        ),
    ),
    "output": (
        Equivalent(
            "write_output",
            'if config.output.mode == "resample":',
            'if config.output.mode >= "resample":',
            "the mode is validated to 'resample' or 'georef', and 'georef' < 'resample'",
        ),
        Equivalent(
            "gcp_indices",
            'if config.output.mode != "georef" or transform_model(config.estimate.transform)'
            ".geotransform:",
            'if config.output.mode > "georef" or transform_model(config.estimate.transform)'
            ".geotransform:",
            "the mode is validated to 'resample' or 'georef', and 'resample' > 'georef'",
        ),
        Equivalent(
            "write_output",
            "for (a, b), (c, d) in zip(xy_mov[gcp_idx], XY, strict=True)",
            "for (a, b), (c, d) in zip(xy_mov[gcp_idx], XY, strict=False)",
            "XY is computed from xy_ref[gcp_idx], so both have len(gcp_idx) rows",
        ),
    ),
    "geometry": (
        Equivalent(
            "_loo_linear",
            "if 2 * (n - 1) < _design(model, src[:1]).shape[-1]:",
            "if 2 * (n - 1) < _design(model, src[: 2]).shape[-1]:",
            "the design's last axis is the parameter count, whatever the number of points",
        ),
        Equivalent(
            "check_overlap",
            "if frac <= 0.0:",
            "if frac == 0.0:",
            "overlap_fraction is an area ratio, never negative",
        ),
        Equivalent(
            "check_plausible",
            "[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1], [(w - 1) / 2, (h - 1) / 2]], float",
            "[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1], [(w - 1) / 2, (h - 1) / 3]], float",
            "practically: the denominator is affine in x, y and det J = det M / w^3, so the "
            "corners bound both; moving the fifth sample inside the image changes no verdict",
        ),
        Equivalent(
            "matrix_from_georef",
            "gx, gy = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))",
            "gx, gy = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h + 1, grid))",
            "practically: a lattice 2 rows longer moves the initial guess by 0.04 px on a "
            "1500 x 1000 px UTM/lon-lat pair whose guess is 22 px from the exact mapping",
        ),
    ),
    "matching": (
        Equivalent(
            "_local_mutual",
            "if flat.numel() == 0:",
            "if flat.numel() < 0:",
            "the early return only saves time: with no finite pair (and n, c >= 1, as "
            "match_mutual guarantees) every pair_sim is -inf, so the rest selects none",
        ),
        Equivalent(
            "_local_mutual",
            "valid = torch.isfinite(pair_sim) & (pair_ref >= 0)",
            "valid = torch.isfinite(pair_sim) & (pair_ref >= -1)",
            "an unset candidate (arg -1) has val -inf, so its sim is masked to -inf and "
            "isfinite(pair_sim) already refuses it",
        ),
    ),
    "coarse": (
        Equivalent(
            "needs_tiles",
            "return ref.decimation > 1.02 * dec_ref or mov.decimation > 1.02 * dec_mov",
            "return ref.decimation >= 1.02 * dec_ref or mov.decimation > 1.02 * dec_mov",
            "practically: differs only at a decimation of exactly 1.02 x the tiles', a 2 % "
            "tolerance chosen for rounding (tiles would read almost the same pixels)",
        ),
        Equivalent(
            "needs_tiles",
            "return ref.decimation > 1.02 * dec_ref or mov.decimation > 1.02 * dec_mov",
            "return ref.decimation > 1.02 * dec_ref or mov.decimation >= 1.02 * dec_mov",
            "as above, for the moving image",
        ),
        Equivalent(
            "fit_searched",
            "ref_levels = {(1.0, 1.0): feat_ref}",
            "ref_levels = {( 2.0, 1.0): feat_ref}",
            "a cache entry: on a miss the reference is extracted again, resized by 1 (the same "
            "image) with the same settings: the same features, later",
        ),
        Equivalent(
            "estimate_coarse",
            "feat_ref = extract(ctx.loaded.net, img_ref, kp_mask_ref, "
            "replace(xcfg, refine_radius=0))",
            "feat_ref = extract(ctx.loaded.net, img_ref, kp_mask_ref, "
            "replace(xcfg, refine_radius= 1))",
            "the reference's local descriptors are never read: matching and refinement use the "
            "moving image's (match_mutual, refine_keypoints); only time and memory change",
        ),
    ),
    "verify": (
        Equivalent(
            "_shrink_finer_moving",
            "k = 1.0 / np.sqrt(det) if det > 0 else 1.0  # moving px per reference px",
            "k = 1.0 / np.sqrt(det) if det > 0 else 0.0  # moving px per reference px",
            "k is only compared with 1.5: for a singular matrix 0 and 1 both keep the image",
        ),
        Equivalent(
            "window_correction",
            'if model == "similarity":',
            'if model >= "similarity":',
            "translation returns earlier; of the other models only 'similarity' sorts at or "
            "after 'similarity' ('affine', 'homography' sort before it)",
        ),
    ),
    "model": (
        Equivalent(
            "dense_maps",
            "logits = _combine_head_terms(terms, (h, w), chunk_rows=2 * chunk_rows)",
            "logits = _combine_head_terms(terms, (h, w), chunk_rows=2 ** chunk_rows)",
            "the chunk size bounds memory only: the maps are equal for any chunking",
        ),
        Equivalent(
            "descriptors_at",
            "x0, x1, fx = _source_taps(x.clamp(0, w - 1), w, low.shape[-1])",
            "x0, x1, fx = _source_taps(x.clamp(0, w - 0), w, low.shape[-1])",
            "_source_taps clamps both taps to the last source pixel: x in (W-1, W-0.5] samples "
            "the edge value either way",
        ),
    ),
    "outputs": (
        Equivalent(
            "guard_outputs",
            'outs = [_item(r, p) for r, p in outputs if p is not None and os.fspath(p) != ""]',
            'outs = [_item(r, p) for r, p in outputs if p is not None and os.fspath(p) is not ""]',
            "CPython's empty str is a singleton: an empty path is the '' object",
        ),
    ),
    "features": (
        Equivalent(
            "extract",
            "n_tiles = sum(len(r) * len(c) for _, _, r, c in plan)",
            "n_tiles = sum(len(r) & len(c) for _, _, r, c in plan)",
            "n_tiles is only the progress bar's total and a log line",
        ),
        Equivalent(
            "_tile_candidates",
            "return maps, torch.zeros((0, 2), dtype=torch.float64), np.zeros(0, np.float64)",
            "return maps, torch.zeros((0, 1), dtype=torch.float64), np.zeros(0, np.float64)",
            "an empty tile's positions are never read: extract skips a tile with no scores",
        ),
    ),
}


def _equivalent(name: str, survivor: dict) -> Equivalent | None:
    for eq in EQUIVALENT.get(name, ()):
        if (eq.function, eq.original, eq.mutated) == (
            survivor["function"], survivor["original"], survivor["mutated"]
        ):  # fmt: skip
            return eq
    return None


def _paths(tests: tuple[str, ...]) -> list[str]:
    """The file paths among pytest arguments (not options, not ``-k`` expressions)."""
    out, skip = [], False
    for t in tests:
        if skip:
            skip = False
        elif t in ("-k", "-m"):
            skip = True
        elif not t.startswith("-"):
            out.append(t.split("::")[0])
    return out


def _copy_tree(dst: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the working tree, copied to ``dst``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _mutants(path: Path):
    """Every cosmic-ray mutation of the module at ``path`` (all core operators)."""
    from cosmic_ray.commands.init import _all_work_items

    return [item.mutations[0] for item in _all_work_items([path], {})]


def _annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``((line, col), (end_line, end_col))`` of every annotation in ``source``: with
    ``from __future__ import annotations`` they are never evaluated, so a mutant inside one
    (``X | None`` -> ``X ** None``) is equivalent and is not run."""
    import ast

    spans = []
    for node in ast.walk(ast.parse(source)):
        anns = []
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            anns.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            anns.append(node.returns)
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in anns]
    return spans


def _in_annotation(pos: tuple[int, int], spans) -> bool:
    return any(start <= tuple(pos) < end for start, end in spans)


def _run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p",
           "no:randomly", *tests]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.perf_counter() - t0
    elapsed = time.perf_counter() - t0
    if proc.returncode == 0:
        return "survived", elapsed
    if proc.returncode == 1:  # tests ran and failed
        return "killed", elapsed
    return "incompetent", elapsed  # collection error, usage error...


def check_module(
    name: str, copy: Path, sample: int | None, seed: int, only: list[dict] | None = None
) -> dict:
    """Mutate ``name`` in ``copy`` one mutant at a time; returns counts and survivors.

    ``only``: survivors of an earlier report (``function``, ``original``, ``mutated``): run just
    the mutants that still produce one of those lines instead of a sample."""
    from cosmic_ray.mutating import use_mutation
    from cosmic_ray.plugins import get_operator

    rel, tests = MODULES[name]
    missing = [t for t in _paths(tests) if not (copy / t).exists()]
    if missing:
        raise SystemExit(f"{name}: test file(s) {' '.join(missing)} not found")
    path = copy / rel
    outcome, base_s = _run_tests(copy, tests, timeout=1800)
    if outcome != "survived":
        raise SystemExit(f"{name}: the tests {' '.join(tests)} fail without a mutant")
    timeout = max(60.0, 3.0 * base_s)
    mutants = _mutants(path)
    total = len(mutants)
    original = path.read_text()
    lines = original.splitlines()
    if only is not None:
        wanted = {(o["function"], o["original"]) for o in only}
        mutants = [
            m for m in mutants if (m.definition_name, lines[m.start_pos[0] - 1].strip()) in wanted
        ]
    elif sample is not None and sample < total:
        mutants = random.Random(seed).sample(mutants, sample)
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "equivalent": 0}
    survivors, stale = [], []
    annotated = 0
    future = "from __future__ import annotations" in original
    spans = _annotation_spans(original) if future else []
    for i, m in enumerate(mutants, 1):
        if _in_annotation(m.start_pos, spans):
            counts["equivalent"] += 1
            print(f"  [{i}/{len(mutants)}] {name}:{m.start_pos[0]} {m.operator_name} -> "
                  "equivalent (in an annotation, not run)", flush=True)  # fmt: skip
            continue
        operator = get_operator(m.operator_name)(**(m.operator_args or {}))
        with use_mutation(path, operator, m.occurrence) as (_, mutated):
            if mutated is None:
                continue
            line = m.start_pos[0]
            info = {"line": line, "operator": m.operator_name, "function": m.definition_name,
                    "original": lines[line - 1].strip(),
                    "mutated": mutated.splitlines()[line - 1].strip()}  # fmt: skip
            if only is not None and not any(
                (o["function"], o["original"], o["mutated"])
                == (info["function"], info["original"], info["mutated"])
                for o in only
            ):
                continue
            result, secs = _run_tests(copy, tests, timeout)
        assert path.read_text() == original
        key = result.split()[0]
        counts[key] += 1
        eq = _equivalent(name, info)
        note = f" [annotated equivalent: {eq.why}]" if eq and key == "survived" else ""
        print(f"  [{i}/{len(mutants)}] {name}:{info['line']} {m.operator_name} -> {result} "
              f"({secs:.0f} s){note}", flush=True)  # fmt: skip
        if key == "survived":
            survivors.append({**info, "equivalent": eq.why if eq else None})
            annotated += eq is not None
        elif eq is not None and key == "killed":
            stale.append(info)
            print(f"    stale annotation: the tests kill it ({eq.why})", flush=True)
    tested = counts["killed"] + counts["survived"]
    real = tested - annotated
    return {
        "module": rel,
        "tests": list(tests),
        "mutants_total": total,
        "mutants_run": counts["killed"] + counts["survived"] + counts["incompetent"],
        **counts,
        "annotated_equivalent": annotated,
        "survival_rate": counts["survived"] / tested if tested else 0.0,
        "survival_rate_excl_equivalent": (counts["survived"] - annotated) / real if real else 0.0,
        "baseline_s": round(base_s, 1),
        "survivors": survivors,
        "stale_annotations": stale,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"of: {', '.join(MODULES)} (default: all)")
    ap.add_argument("--sample", type=int, help="mutants drawn per module (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="mutation_report.json")
    ap.add_argument("--list", action="store_true", help="show modules and tests, then exit")
    ap.add_argument("--rerun", metavar="REPORT", help="run only the survivors listed in REPORT")
    ap.add_argument(
        "--tests", nargs="+", metavar="ARG", help="pytest arguments replacing the modules' own"
    )
    args = ap.parse_args(argv)
    if args.list:
        for name, (rel, tests) in MODULES.items():
            print(f"{name:10s} {rel:24s} {' '.join(tests)}")
        return 0
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        ap.error("cosmic-ray is not installed: pip install cosmic-ray")
    if args.tests:
        for name in names:
            MODULES[name] = (MODULES[name][0], tuple(args.tests))
    previous = {}
    if args.rerun:
        previous = {r["module"]: r["survivors"] for r in json.loads(Path(args.rerun).read_text())}
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sarreg-mutation-") as tmp:
        copy = Path(tmp)
        _copy_tree(copy)
        for name in names:
            print(f"{name}: mutating {MODULES[name][0]}", flush=True)
            only = previous.get(MODULES[name][0], []) if args.rerun else None
            results.append(check_module(name, copy, args.sample, args.seed, only))
    print(
        f"\n{'module':24s} {'mutants':>7s} {'run':>4s} {'killed':>6s} {'surv.':>5s} "
        f"{'equiv.*':>7s} {'incomp.':>7s} {'annot.':>6s} {'raw':>6s} {'excl.eq':>7s}"
    )
    for r in results:
        print(
            f"{r['module']:24s} {r['mutants_total']:7d} {r['mutants_run']:4d} "
            f"{r['killed']:6d} {r['survived']:5d} {r['equivalent']:7d} {r['incompetent']:7d} "
            f"{r['annotated_equivalent']:6d} {100 * r['survival_rate']:5.1f}% "
            f"{100 * r['survival_rate_excl_equivalent']:6.1f}%"
        )
    print(
        "equiv.*: inside an annotation, not run; annot.: survivors annotated equivalent "
        f"(EQUIVALENT); {time.perf_counter() - t0:.0f} s in all"
    )
    for r in results:
        for st in r["stale_annotations"]:
            print(f"stale annotation in {r['module']}:{st['line']}: {st['mutated']}")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"surviving mutants: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
