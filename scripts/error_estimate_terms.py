"""The terms of sarreg's error estimate against the true error, per pair of a benchmark.

Registers every pair of a benchmark folder (``sarreg evaluate synth``, e.g. the ``bench/``
folder that ``scripts/benchmark.py`` writes) as ``sarreg evaluate run --method register``
does and prints per pair the terms of its error estimate (the report's
``error_estimate.terms``, :class:`sarreg.uncertainty.ErrorTerms`), RMS over the moving image's
corners and centre (reference px): the least-squares covariance of the tie points' fit
(``fit``), the misalignment the check's windows measure (``field``) and its standard error
(``se``), the floor of a fit corrected by the windows (``floor``, 0 for a plain fit), the refit
on the windows (``refit``), the predicted and the true error; and, for a fit corrected by the
windows, the range of the standard-error factor (:data:`sarreg.uncertainty.
CORRECTED_SE_FACTOR`) that would put its prediction (:meth:`~sarreg.uncertainty.ErrorTerms.
combine`) within 2x of its true error, with the factors that do so for every corrected pair of
the folder (none: no choice of it can).

    python scripts/error_estimate_terms.py out/benchmark/bench [--pairs pair_0005,pair_0014]
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import numpy as np

#: standard-error factors scanned
FACTORS = np.round(np.arange(0.0, 4.001, 0.05), 2)


def predicted(terms, k: float) -> float:
    """The prediction (RMS px) of :class:`sarreg.uncertainty.ErrorTerms` ``terms`` with
    standard-error factor ``k``."""
    return float(np.sqrt(np.mean(terms.combine(k) ** 2)))


def allowed(terms, true: float) -> set[float]:
    """Factors of :data:`FACTORS` that put the prediction within 2x of ``true``."""
    return {float(k) for k in FACTORS if 0.5 <= predicted(terms, k) / true <= 2.0}


def rms(v) -> float | None:
    return None if v is None else float(np.sqrt(np.mean(np.asarray(v) ** 2)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path, help="benchmark folder (pair_*.json and their rasters)")
    ap.add_argument("--pairs", default=None, help="comma-separated pair names; default all")
    opts = ap.parse_args()
    logging.disable(logging.WARNING)

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain benchmark images

    from sarreg import uncertainty
    from sarreg.config import RegisterConfig, with_values
    from sarreg.errors import SarregError
    from sarreg.pipeline import register

    names = opts.pairs.split(",") if opts.pairs else None
    metas = sorted(opts.bench.glob("pair_*.json"))
    print(
        "| pair | corrected | fit | field | se | floor | refit | predicted | true | ratio "
        "| factors within 2x |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    common: set[float] | None = None
    for path in metas:
        meta = json.loads(path.read_text())
        if names and meta["name"] not in names:
            continue
        cfg = with_values(
            RegisterConfig(),
            {
                "estimate.transform": meta.get("model") or "affine",
                "estimate.allow_reflection": bool(meta["tags"].get("allow_reflection", False)),
            },
        )
        try:
            res = register(opts.bench / meta["reference"], opts.bench / meta["moving"], None, cfg)
        except SarregError as err:
            print(f"| {meta['name']} | refused: {err} |||||||||")
            continue
        with rasterio.open(opts.bench / meta["moving"]) as ds:
            shape = ds.shape
        true = uncertainty.true_error(np.asarray(res.matrix), np.array(meta["matrix"]), shape)
        pred = float(res.predicted_error)
        found = res.report["error_estimate"].get("terms")
        t = None if found is None else uncertainty.ErrorTerms.from_dict(found)
        span = "-"
        if t is not None and t.corrected:
            ok = allowed(t, true)
            common = ok if common is None else common & ok
            span = f"{min(ok):.2f}..{max(ok):.2f}" if ok else "none"
        if t is not None and abs(predicted(t, t.se_factor()) - pred) > 1e-3:
            span += f" (terms give {predicted(t, t.se_factor()):.3f}, not the estimate)"

        def f(v):
            return "-" if v is None else f"{v:.3f}"

        if t is None:  # the fit's covariance alone (no verification windows)
            print(f"| {meta['name']} | no | - | - | - | - | - | {pred:.3f} | {true:.3f} "
                  f"| {pred / true:.2f} | - |")  # fmt: skip
            continue
        print(
            f"| {meta['name']} | {'yes' if t.corrected else 'no'} | {f(rms(t.fit))} "
            f"| {f(rms(t.field))} | {f(rms(t.field_se))} | {t.floor:.3f} "
            f"| {f(rms(t.refit))} | {pred:.3f} | {true:.3f} | {pred / true:.2f} | {span} |"
        )
    if common is not None:
        said = f"{min(common):.2f}..{max(common):.2f}" if common else "none"
        print(f"\nstandard-error factors within 2x on every corrected pair: {said}")
        print(f"(in use: {uncertainty.CORRECTED_SE_FACTOR})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
