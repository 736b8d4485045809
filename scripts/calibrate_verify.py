"""Calibrate and check ``sarreg.verify`` on real pairs with known truth: the right transform
must pass, wrong ones (shifted by 3, 5 or 20 px, the right transform composed with a wrong
90 or 180 deg hypothesis, unrelated images) fail.

Pairs: the demo pair (data/demo), the three OPERA multi-date pairs (identity), and a synthetic
benchmark (`sarreg evaluate synth`, real speckle/change) built from the bundled samples, or
with `--heldout` from the held-out Sentinel-1 tiles (single-look speckle at `hard`).

    python scripts/calibrate_verify.py --n 12 --difficulty medium
    python scripts/calibrate_verify.py --n 20 --difficulty hard --heldout
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def load(path, pre_cfg):
    from sarreg import io, preprocess

    r = io.read_raster(str(path))
    img, _ = preprocess.preprocess(r.data, r.mask, r.kind, pre_cfg)
    return img, r.mask


def pairs(n: int, difficulty: str, tmp: Path, heldout: bool = False):
    from sarreg.evaluation.bench import read_benchmark
    from sarreg.evaluation.synth import build_benchmark

    demo = REPO / "data/demo"
    truth = np.array(json.loads((demo / "truth.json").read_text())["matrix_mov_to_ref"])
    yield "demo", demo / "reference.tif", demo / "moving.tif", truth
    op = sorted((REPO / "data/opera_rtc_s1").glob("*_cropped.tif"))
    for i in range(len(op)):
        for j in range(i + 1, len(op)):
            yield f"opera{i}{j}", op[i], op[j], np.eye(3)
    images = [
        REPO / p
        for p in ("data/umbra_mount_yasur.tif", "data/s1_vv_grd_db.tif", "data/opera_rtc_s1")
    ]
    display_as = "amplitude"
    if heldout:
        from benchmark import heldout_images

        images, display_as = heldout_images(), "intensity"
    build_benchmark(
        images,
        tmp,
        n=n,
        seed=3,
        difficulty=difficulty,
        crop=512,
        display_as=display_as,
        overwrite=True,
    )
    for p in read_benchmark(tmp):
        yield p.name, p.reference, p.moving, p.matrix


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--heldout", action="store_true", help="held-out S1 tiles instead")
    opts = ap.parse_args()
    from sarreg.pipeline import load_model
    from sarreg.preprocess import PreprocessConfig
    from sarreg.verify import verify_registration

    pre = PreprocessConfig.from_dict(load_model(None).preprocess or {})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = [
            (nm, load(r, pre), load(m, pre), t)
            for nm, r, m, t in pairs(opts.n, opts.difficulty, Path(tmp), opts.heldout)
        ]
    print(f"{'pair':<12} {'case':<10} {'verdict':<12} tried agree frac  med_px  p90_px ncc_med")
    for k, (name, (ir, mr), (im, mm), t) in enumerate(data):
        other = data[(k + 5) % len(data)][2]
        h, w = im.shape
        rot90 = np.array([[0.0, -1.0, w - 1.0], [1.0, 0.0, 0.0], [0, 0, 1]])
        rot180 = np.array([[-1.0, 0.0, w - 1.0], [0.0, -1.0, h - 1.0], [0, 0, 1]])
        cases = {"truth": (im, mm, t)}
        for dx in (3.0, 5.0, 20.0):
            cases[f"shift{dx:g}"] = (im, mm, np.array([[1, 0, dx], [0, 1, 0], [0, 0, 1]]) @ t)
        # the content turned but registered as is; the right transform composed with a wrong
        # 90 or 180 deg hypothesis
        cases["rot90"] = (np.rot90(im).copy(), np.rot90(mm).copy(), t)
        cases["rot90'"] = (im, mm, t @ rot90)
        cases["rot180"] = (im, mm, t @ rot180)
        cases["unrelated"] = (other[0], other[1], np.eye(3))
        for case, (a, b, m) in cases.items():
            v = verify_registration(ir, mr, a, b, m)
            ncc = np.median([x["ncc"] for x in v.windows]) if v.windows else np.nan
            rows.append((name, case, v))
            print(
                f"{name:<12} {case:<10} {v.verdict.value:<12} {v.windows_tried:5d} "
                f"{v.windows_agree:5d} {v.agree_fraction:4.2f} {v.median_px:7.2f} "
                f"{v.p90_px:7.2f} {ncc:6.2f}"
            )
    bad = [
        (n, c, v.verdict.value) for n, c, v in rows if (c == "truth") != (v.verdict.value == "pass")
    ]
    print("wrong verdicts:", bad or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
