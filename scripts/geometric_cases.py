"""Outcome of every geometric case of tests/test_verify_search.py and tests/test_search.py:
registered (true error, predicted error, winning hypothesis) or refused (exit code), on the
bundled Umbra sample.

``true_px`` is the RMS error over a grid of the moving image (over the overlap only for the
moving image 4x coarser, where the reference covers a sixteenth of it); ``true_5pt`` is the
error at the points the prediction is made for, the moving image's corners and centre
(:func:`sarreg.uncertainty.true_error`, as ``sarreg evaluate`` compares them); ``s`` the
seconds inside ``register()`` (the first case includes loading the model).

    python scripts/geometric_cases.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_verify_search import _moving, _umbra, _write  # noqa: E402


def main() -> int:
    from sarreg.config import with_values
    from sarreg.errors import SarregError
    from sarreg.geometry import mapping_rmse, similarity_about_centre
    from sarreg.pipeline import RegisterConfig, register

    data = REPO / "data"
    crop, _, _ = _umbra(data, 600, 900, 384)
    g, t, crs = _umbra(data, 700, 700, 512)
    flip = np.array([[-1.0, 0, 383.0], [0, 1, 0], [0, 0, 1]])
    cases = []
    for deg in (90, 180, 270):
        w = similarity_about_centre(crop.shape, deg + 3.0, 1.0, (4.0, -3.0))
        cases.append((f"rotated {deg}", crop, _moving(crop, w), None, None, np.linalg.inv(w), {}))
    w = similarity_about_centre(crop.shape, 2.0, 1.0, (3.0, 5.0)) @ flip
    m = _moving(crop, w)
    cases.append(("mirrored", crop, m, None, None, np.linalg.inv(w), {}))
    cases.append(("mirrored --allow-reflection", crop, m, None, None, np.linalg.inv(w),
                  {"estimate.allow_reflection": True}))  # fmt: skip
    w = similarity_about_centre(crop.shape, 37.0, 1.3, (4.0, -3.0))
    cases.append(("rotated 37 deg, x1.3", crop, _moving(crop, w), None, None, np.linalg.inv(w),
                  {}))  # fmt: skip
    w = similarity_about_centre(crop.shape, 30.0, 1.0, (3.0, 5.0)) @ flip
    cases.append(("mirrored + 30 deg --allow-refl.", crop, _moving(crop, w), None, None,
                  np.linalg.inv(w), {"estimate.allow_reflection": True}))  # fmt: skip
    q = _umbra(data, 900, 900, 400)[0]
    big = _umbra(data, 300, 300, 1600, out_shape=(400, 400))[0]
    cases.append(("scaled 1/4", q, big, None, None,
                  np.array([[4.0, 0, -598.5], [0, 4.0, -598.5], [0, 0, 1]]), {}))  # fmt: skip
    cases.append(("scaled 4", big, q, None, None,
                  np.array([[0.25, 0, 600.5 / 4 - 0.5], [0, 0.25, 600.5 / 4 - 0.5], [0, 0, 1]]),
                  {}))  # fmt: skip
    w = similarity_about_centre(g.shape, 3.0, 1.02, (6.0, -4.0))
    c = 256.0
    for name, tm in (("georef off 150 px", t @ Affine.translation(150.0, 0.0)),
                     ("georef rotated 30 deg", t @ Affine.translation(c, c)
                      @ Affine.rotation(30.0) @ Affine.translation(-c, -c))):  # fmt: skip
        cases.append((name, g, _moving(g, w), (t, crs), (tm, crs), np.linalg.inv(w), {}))
    cases.append(("unrelated", crop, _umbra(data, 1500, 100, 384)[0], None, None, None, {}))
    from sarreg.uncertainty import true_error

    print(f"{'case':<32} {'outcome':<10} {'true_px':>8} {'true_5pt':>8} {'pred_px':>8} "
          f"{'s':>6}  hypothesis")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, a, b, ga, gb, truth, extra) in enumerate(cases):
            ref = _write(Path(tmp) / f"r{k}.tif", a, *(ga or ()))
            mov = _write(Path(tmp) / f"m{k}.tif", b, *(gb or ()))
            cfg = with_values(
                RegisterConfig(progress=False), {"estimate.transform": "similarity", **extra}
            )
            t0 = time.perf_counter()
            try:
                res = register(ref, mov, None, cfg)
            except SarregError as err:
                sec = time.perf_counter() - t0
                print(f"{name:<32} {'refused':<10} {'':>8} {'':>8} {'':>8} {sec:6.1f}  "
                      f"exit {err.exit_code}")  # fmt: skip
                continue
            sec = time.perf_counter() - t0
            true = mapping_rmse(res.matrix, truth, b.shape) if truth is not None else np.inf
            at5 = true_error(res.matrix, truth, b.shape) if truth is not None else np.inf
            if name == "scaled 1/4":  # only the overlap is defined
                from sarreg.geometry import apply_matrix

                pts = np.array([[160.0, 160], [240, 160], [240, 240], [160, 240]])
                d = apply_matrix(res.matrix, pts) - apply_matrix(truth, pts)
                true = float(np.sqrt((d**2).sum(axis=1).mean()))
            hyp = res.report["search"]["hypothesis"]["description"]
            prior = res.report["search"]["georeferencing_prior"]
            print(
                f"{name:<32} {'registered':<10} {true:8.3f} {at5:8.3f} {res.predicted_error:8.3f} "
                f"{sec:6.1f}  "
                f"{hyp}{' (prior)' if prior else ''}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
