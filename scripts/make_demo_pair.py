"""Build the bundled demo pair in data/demo/ from two real OPERA RTC-S1 dates.

The OPERA dates are pixel-aligned (true transform = identity). The moving image is the
2024-02-04 date warped by a known affine (rotation, scale, shift) but written with the
original geotransform, i.e. a real 12-day pair whose georeferencing is off by a known
transform. ``truth.json`` stores the true matrix mapping moving pixel centres to reference
pixel centres.

    python scripts/make_demo_pair.py
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "data" / "opera_rtc_s1"
REF = (
    SRC
    / "OPERA_L2_RTC-S1_T009-019294-IW2_20240123T084748Z_20240123T162136Z_S1A_30_v1.0_VH_cropped.tif"
)
MOV = (
    SRC
    / "OPERA_L2_RTC-S1_T009-019294-IW2_20240204T084747Z_20240204T155800Z_S1A_30_v1.0_VH_cropped.tif"
)
OUT = REPO / "data" / "demo"

ROTATION_DEG = 2.0
SCALE = 1.03
SHIFT = (6.4, -3.7)


def warp_matrix(shape: tuple[int, int]) -> np.ndarray:
    """3x3 matrix W taking source pixel centres to moving-image pixel centres."""
    from sarreg.geometry import similarity_about_centre

    return similarity_about_centre(shape, ROTATION_DEG, SCALE, SHIFT)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with rasterio.open(REF) as ds:
        profile = ds.profile
        ref = ds.read(1)
    with rasterio.open(MOV) as ds:
        src = ds.read(1)
    w = warp_matrix(src.shape)
    valid = np.isfinite(src)
    size = (src.shape[1], src.shape[0])
    data = cv2.warpAffine(
        np.where(valid, src, 0).astype(np.float32),
        w[:2],
        size,
        flags=cv2.INTER_LINEAR,
        borderValue=0,
    )
    vmask = cv2.warpAffine(
        valid.astype(np.float32), w[:2], size, flags=cv2.INTER_LINEAR, borderValue=0
    )
    moving = np.where(vmask > 0.999, data, np.nan).astype(np.float32)
    profile.update(compress="deflate", tiled=False)
    with rasterio.open(OUT / "reference.tif", "w", **profile) as ds:
        ds.write(ref, 1)
    with rasterio.open(OUT / "moving.tif", "w", **profile) as ds:
        ds.write(moving, 1)
    truth = {
        "description": "moving.tif = 2024-02-04 OPERA RTC-S1 VH warped by a known affine, "
        "written with the original (now wrong) geotransform; reference.tif = 2024-01-23",
        "matrix_mov_to_ref": np.linalg.inv(w).tolist(),
        "convention": "moving pixel centre (x, y, 1) -> reference pixel centre",
        "rotation_deg": ROTATION_DEG,
        "scale": SCALE,
        "shift_px": list(SHIFT),
    }
    (OUT / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


if __name__ == "__main__":
    main()
