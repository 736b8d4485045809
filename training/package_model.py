"""Package a training run's checkpoint as sarreg's bundled model.

Drops the optimizer state, records the licence and the training data's attribution in the
checkpoint metadata, and writes ``sarreg/weights/fast_r2d2_sar.pt`` (atomically).

    python training/package_model.py runs/ship/best.pt

Step 6 of the shipped model's recipe (``training/reproduce.py``, which writes to its own
output folder instead of replacing the shipped weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DATA_ATTRIBUTION = [
    "Contains modified Copernicus Sentinel data 2020 (Sentinel-1A IW GRDH VH tiles, as "
    "published in the VolkovVl/Optical-SAR-dataset repository)",
    "NASA/JPL AIRSAR data (PolSARpro San Francisco L-band sample scene)",
    "Umbra Space Open Data Program (CC-BY-4.0), Mount Yasur GEC clip",
    "Contains modified Copernicus Sentinel-1 data (2024), processed by NASA JPL OPERA "
    "(RTC-S1 VH series, via opera-adt/distmetrics test data, Apache-2.0)",
]


def package(checkpoint, out, note: str = "") -> Path:
    """Write ``checkpoint`` without its training state and with the licence and data
    attribution in its metadata, as ``out`` (atomically). Returns ``out``."""
    from sarreg.model.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(checkpoint)
    meta = dict(ck.meta or {})
    meta.update(
        name="fast_r2d2_sar",
        license="Apache-2.0 (weights trained by sarreg from scratch; no third-party weights)",
        training_data_attribution=DATA_ATTRIBUTION,
        model_card="sarreg/weights/README.md",
    )
    if note:
        meta["training_history"] = note
    save_checkpoint(out, ck.net, meta=meta, preprocess=ck.preprocess)
    return Path(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run checkpoint (best.pt or last.pt)")
    parser.add_argument(
        "--out", default=str(REPO / "sarreg" / "weights" / "fast_r2d2_sar.pt"), help="output"
    )
    parser.add_argument("--note", default="", help="free-text training history for the card")
    opts = parser.parse_args()
    package(opts.checkpoint, opts.out, opts.note)
    print(f"wrote {opts.out} from {opts.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
