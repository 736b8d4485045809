"""ONNX Runtime against PyTorch for the inference pass of the bundled Fast-R2D2 network.

The backbone (``R2D2Net.low_res_features``: every convolution, batch norm, ReLU and the
pooling, the part that costs) is exported to ONNX with dynamic ``H, W`` and run through ONNX
Runtime's CPU provider; PyTorch runs the same backbone the way ``R2D2Net.dense_maps`` does
(channels-last, batch norms folded). Prints, per image size, the median time of a forward in
each runtime, their ratio and the largest absolute difference of the features (the heads and
the descriptor sampling, which stay in PyTorch, see the same features).

    python scripts/bench_inference.py                      # 512 and 1024, 2 threads
    python scripts/bench_inference.py --sizes 512 1024 --threads 1 --repeat 5

Timings depend on the machine's load: compare the ratios of one run. Needs ``onnxruntime``
(not a dependency of sarreg).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import median_time  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()

    import numpy as np
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: pip install onnxruntime", file=sys.stderr)
        return 2
    from sarreg.model.checkpoint import load_default_model

    torch.set_num_threads(opts.threads)
    net = load_default_model().net.eval()

    class Backbone(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.low_res_features(x)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backbone.onnx"
        x0 = torch.rand(1, net.in_channels, 256, 256)
        t0 = time.perf_counter()
        torch.onnx.export(
            Backbone(net).eval(),  # export restores the mode it found
            (x0,),
            str(path),
            input_names=["image"],
            output_names=["features"],
            dynamic_axes={"image": {2: "H", 3: "W"}, "features": {2: "h", 3: "w"}},
            opset_version=17,
            dynamo=False,
        )
        export_s = time.perf_counter() - t0
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    rows = []
    for size in opts.sizes:
        img = rng.random((1, net.in_channels, size, size), dtype=np.float32)
        x = torch.from_numpy(img)
        with torch.inference_mode():
            ref = net.low_res_features(x, inference=True).contiguous().numpy()
        out = sess.run(None, {"image": img})[0]
        diff = float(np.abs(out - ref).max())
        scale = float(np.abs(ref).max())

        def run_torch(x=x):
            with torch.inference_mode():
                net.low_res_features(x, inference=True)

        t_torch = median_time(run_torch, opts.repeat)
        t_ort = median_time(lambda img=img: sess.run(None, {"image": img}), opts.repeat)
        rows.append((size, t_torch, t_ort, diff, scale))
        print(f"{size}: torch {t_torch:.3f} s, onnxruntime {t_ort:.3f} s", file=sys.stderr)

    print(
        f"\nFast-R2D2 backbone, {opts.threads} thread(s), median of {opts.repeat}; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}; export {export_s:.1f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    print("| size | PyTorch s | ONNX Runtime s | PyTorch / ORT | max abs diff | max abs value |")
    print("|---|---|---|---|---|---|")
    for size, t_torch, t_ort, diff, scale in rows:
        print(
            f"| {size} | {t_torch:.3f} | {t_ort:.3f} | {t_torch / t_ort:.2f} | {diff:.2e} | "
            f"{scale:.3g} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
