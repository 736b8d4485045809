"""Compare a registration report with the known truth of the demo pair.

    python scripts/check_demo.py out/demo_aligned.json data/demo/truth.json

Prints the error of the estimated transform against the truth (RMSE over a grid of moving
pixels, in reference pixels) and exits non-zero if it exceeds 1.5 px.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(report_path: str, truth_path: str, limit: float = 1.5) -> int:
    report = json.loads(open(report_path).read())
    truth = json.loads(open(truth_path).read())
    m_est = np.array(report["transform"]["pixel_matrix"])
    m_true = np.array(truth["matrix_mov_to_ref"])
    h, w = report["moving"]["shape"]
    ys, xs = np.mgrid[0:h:10, 0:w:10]
    p = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    a = m_est @ p
    b = m_true @ p
    err = np.hypot(*(a[:2] / a[2] - b[:2] / b[2]))
    rmse = float(np.sqrt(np.mean(err**2)))
    print(
        f"demo: {report['inliers']} inliers of {report['matches']} matches, "
        f"error against the known transform: RMSE {rmse:.2f} px, max {err.max():.2f} px "
        f"(limit {limit} px); total time {report['timings_s']['total']:.2f} s"
    )
    return 0 if rmse <= limit else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
