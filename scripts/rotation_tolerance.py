"""How much rotation and scale the keypoint network tolerates: matches, true inliers (within
3 px of the truth) and their share against the rotation angle and the scale between a bundled
sample crop and the same crop warped, with independent speckle-like noise on both sides.
Chooses the step of :mod:`sarreg.search`.

    python scripts/rotation_tolerance.py [--size 384]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    import cv2
    import rasterio
    from rasterio.windows import Window

    from sarreg import preprocess
    from sarreg.features import ExtractConfig, extract
    from sarreg.geometry import apply_matrix, similarity_about_centre
    from sarreg.matching import match_mutual
    from sarreg.model.checkpoint import load_default_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    ck = load_default_model()
    pre = preprocess.PreprocessConfig.from_dict(ck.preprocess or {})
    with rasterio.open(REPO / "data" / "umbra_mount_yasur.tif") as ds:
        a = ds.read(1, window=Window(600, 600, args.size, args.size)).astype(np.float32)
    rng = np.random.default_rng(0)
    xcfg = ExtractConfig(progress=False)

    def prep(img):
        img = img * rng.gamma(4.0, 0.25, img.shape).astype(np.float32)  # 4-look speckle
        m = img > 0
        return preprocess.preprocess(np.clip(img, 0, 255), np.ones_like(m), "display", pre)

    im_r, km_r = prep(a)
    f_r = extract(ck.net, im_r, km_r, xcfg)
    rows = []
    cases = [(d, 1.0) for d in (0, 5, 10, 15, 20, 25, 30, 35, 40, 45)]
    cases += [(0, s) for s in (0.5, 0.63, 0.71, 0.8, 0.9, 1.12, 1.25, 1.41, 1.6, 2.0)]
    for deg, sc in cases:
        w = similarity_about_centre(a.shape, deg, sc, (0.0, 0.0))  # ref px -> mov px
        mv = cv2.warpAffine(a, w[:2], a.shape[::-1], flags=cv2.INTER_LINEAR)
        valid = cv2.warpAffine(np.ones_like(a), w[:2], a.shape[::-1], flags=cv2.INTER_NEAREST)
        im_m, km_m = prep(mv)
        km_m &= valid > 0
        f_m = extract(ck.net, im_m, km_m, xcfg)
        m = match_mutual(f_r, f_m)
        xy_r = f_r.keypoints[m.idx_ref].astype(float)
        xy_m = f_m.keypoints[m.idx_mov].astype(float)
        err = np.linalg.norm(apply_matrix(np.linalg.inv(w), xy_m) - xy_r, axis=1)
        good = int((err < 3).sum())
        rows.append((deg, sc, len(m), good, good / max(len(m), 1)))
    print(f"{'rot_deg':>7} {'scale':>6} {'matches':>8} {'true_inl':>8} {'share':>6}")
    for deg, sc, n, g, s in rows:
        print(f"{deg:7d} {sc:6.2f} {n:8d} {g:8d} {s:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
