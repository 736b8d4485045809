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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: module -> (file, tests that check its behaviour)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "geometry": (
        "sarreg/geometry.py",
        ("tests/test_geometry.py", "tests/test_properties.py", "tests/test_prior.py"),
    ),
    "matching": ("sarreg/matching.py", ("tests/test_matching.py", "tests/test_prior.py")),
    "features": (
        "sarreg/features.py",
        ("tests/test_features.py", "tests/test_whitening_in_use.py", "tests/test_properties.py"),
    ),
    "model": (
        "sarreg/model/r2d2.py",
        ("tests/test_model_inference.py", "tests/test_checkpoint.py", "tests/test_whitening.py"),
    ),
    "whitening": (
        "sarreg/model/whitening.py",
        ("tests/test_whitening.py", "tests/test_whitening_in_use.py"),
    ),
    "pipeline": (
        "sarreg/pipeline.py",
        ("tests/test_pipeline.py", "tests/test_prior.py", "tests/test_outputs_checked_first.py"),
    ),
    "atomic": (
        "sarreg/atomic.py",
        ("tests/test_atomic.py", "tests/test_properties.py", "tests/test_outputs_checked_first.py"),
    ),
    "outputs": (  # the output guard
        "sarreg/outputs.py",
        ("tests/test_bad_inputs.py", "tests/test_outputs_checked_first.py"),
    ),
    # pipeline stages (inputs -> coarse -> tiles -> estimate -> verify -> output, report)
    "inputs": (
        "sarreg/inputs.py",
        ("tests/test_stages.py", "tests/test_outputs_checked_first.py", "tests/test_prior.py"),
    ),
    "coarse": ("sarreg/coarse.py", ("tests/test_stages.py", "tests/test_prior.py")),
    "tiles": ("sarreg/tiles.py", ("tests/test_stages.py", "tests/test_scene.py")),
    "estimate": ("sarreg/estimate.py", ("tests/test_stages.py", "tests/test_prior.py")),
    "verify": ("sarreg/verify.py", ("tests/test_uncertainty.py", "tests/test_stages.py")),
    "output": (
        "sarreg/output.py",
        ("tests/test_outputs_checked_first.py", "tests/test_gis.py", "tests/test_stages.py"),
    ),
    "report": ("sarreg/report.py", ("tests/test_report.py", "tests/test_stages.py")),
}


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


def check_module(name: str, copy: Path, sample: int | None, seed: int) -> dict:
    """Mutate ``name`` in ``copy`` one mutant at a time; returns counts and survivors."""
    from cosmic_ray.mutating import use_mutation
    from cosmic_ray.plugins import get_operator

    rel, tests = MODULES[name]
    tests = tuple(t for t in tests if (copy / t).exists())
    path = copy / rel
    outcome, base_s = _run_tests(copy, tests, timeout=1800)
    if outcome != "survived":
        raise SystemExit(f"{name}: the tests {' '.join(tests)} fail without a mutant")
    timeout = max(60.0, 3.0 * base_s)
    mutants = _mutants(path)
    total = len(mutants)
    if sample is not None and sample < total:
        mutants = random.Random(seed).sample(mutants, sample)
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "equivalent": 0}
    survivors = []
    original = path.read_text()
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
            result, secs = _run_tests(copy, tests, timeout)
        assert path.read_text() == original
        key = result.split()[0]
        counts[key] += 1
        line = m.start_pos[0]
        print(f"  [{i}/{len(mutants)}] {name}:{line} {m.operator_name} -> {result} "
              f"({secs:.0f} s)", flush=True)  # fmt: skip
        if key == "survived":
            src_line = original.splitlines()[line - 1].strip()
            mut_line = mutated.splitlines()[line - 1].strip() if mutated else ""
            survivors.append({"line": line, "operator": m.operator_name,
                              "function": m.definition_name, "original": src_line,
                              "mutated": mut_line})  # fmt: skip
    tested = counts["killed"] + counts["survived"]
    return {
        "module": rel,
        "tests": list(tests),
        "mutants_total": total,
        "mutants_run": len(mutants),
        **counts,
        "survival_rate": counts["survived"] / tested if tested else 0.0,
        "baseline_s": round(base_s, 1),
        "survivors": survivors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"of: {', '.join(MODULES)} (default: all)")
    ap.add_argument("--sample", type=int, help="mutants drawn per module (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="mutation_report.json")
    ap.add_argument("--list", action="store_true", help="show modules and tests, then exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (rel, tests) in MODULES.items():
            print(f"{name:10s} {rel:28s} {' '.join(tests)}")
        return 0
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        ap.error("cosmic-ray is not installed: pip install cosmic-ray")
    results = []
    with tempfile.TemporaryDirectory(prefix="sarreg-mutation-") as tmp:
        copy = Path(tmp)
        _copy_tree(copy)
        for name in names:
            print(f"{name}: mutating {MODULES[name][0]}", flush=True)
            results.append(check_module(name, copy, args.sample, args.seed))
    print(f"\n{'module':28s} {'mutants':>8s} {'drawn':>6s} {'killed':>7s} {'survived':>9s} "
          f"{'incomp.':>8s} {'equiv.':>7s} {'survival':>9s}")  # fmt: skip
    for r in results:
        print(f"{r['module']:28s} {r['mutants_total']:8d} {r['mutants_run']:6d} "
              f"{r['killed']:7d} {r['survived']:9d} {r['incompetent']:8d} "
              f"{r['equivalent']:7d} {100 * r['survival_rate']:8.1f}%")  # fmt: skip
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"surviving mutants: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
