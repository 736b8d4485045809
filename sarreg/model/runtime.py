"""ONNX Runtime for the inference pass of a Fast-R2D2 backbone (opt-in; PyTorch by default).

On one or two CPU cores ONNX Runtime runs the backbone alone (every convolution of
:meth:`R2D2Net.low_res_features`) about 1.5x as fast as PyTorch
(``scripts/bench_inference.py``), but within ``dense_maps`` (heads included) it saves only
5-15 % of the CPU time, and its memory arena keeps about 400 MB more at 1024 x 1024 (without
the arena the gain is about 5 %). PyTorch therefore stays the default; ``SARREG_INFERENCE=onnx``
selects ONNX Runtime. The heads and the descriptor sampling stay in PyTorch and
see the same low-resolution features, up to float32 rounding (about 1e-5 on features of
magnitude 20).

The backbone is exported as two ONNX graphs, split after the network's pooling:

- the **stem** (the full-resolution convolutions and the 2x2 pooling) runs on horizontal
  strips of the image, each with :data:`STEM_HALO` rows of context above and below, so that
  only a strip's full-resolution activations are held at a time (the 3x3 convolutions reach
  :func:`stem_radius` rows; with that many context rows the kept rows are exact);
- the **trunk** (the rest, at a quarter of the pixels) runs once on the stitched strips and
  returns channels-last features ``(B, h, w, dim)``, the layout ``dense_maps`` reads fastest.

The exported graphs are cached per network: ``<cache>/onnx/<fingerprint>/{stem,trunk}.onnx``
(``<cache>`` = ``$SARREG_CACHE_DIR``, else ``$XDG_CACHE_HOME/sarreg``, else
``~/.cache/sarreg``), or read from ``<checkpoint stem>_onnx/`` next to the checkpoint when
shipped there. The fingerprint hashes the network's configuration and
weights, so an edited or retrained network never runs a stale graph; a network whose tensors
change after the runtime was attached (training) falls back to PyTorch.

``$SARREG_INFERENCE`` chooses: ``torch`` (the default), ``onnx`` (ONNX Runtime, an error when
it cannot run) or ``auto`` (ONNX Runtime when it is installed and the network can be
exported, else PyTorch). ONNX Runtime and the exporter's ``onnx`` package are the optional
``sarreg[onnx]`` dependencies. Sessions use ``torch.get_num_threads()`` intra-op threads at
their first run (one session per thread count), so :func:`set_threads` sets both runtimes at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

#: environment variable that chooses the inference runtime ('auto', 'torch', 'onnx')
RUNTIME_ENV = "SARREG_INFERENCE"
#: environment variable that overrides the cache folder of exported graphs
CACHE_ENV = "SARREG_CACHE_DIR"
#: version of the graph split; part of the fingerprint (a new split re-exports)
EXPORT_VERSION = 1
#: context rows above and below each stem strip (>= stem_radius, even: pooling alignment)
STEM_HALO = 4
#: full-resolution pixels per stem strip (rows = this / width, even, at least 16)
STRIP_PIXELS = 1 << 18
_OPSET = 17

_runtimes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for PyTorch (intra-op), ONNX Runtime sessions (they follow
    ``torch.get_num_threads()``, see the module doc) and OpenCV. A batch worker running one
    scene at a time gets ``cores // workers``."""
    import cv2

    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


@contextlib.contextmanager
def threads_restored() -> Iterator[None]:
    """Restore this process's PyTorch and OpenCV thread counts on leaving the block (in-process
    batch scenes and training set their own)."""
    import cv2

    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        yield
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv_threads)


#: allocations from this size on are mapped and unmapped by glibc malloc (see bound_allocator)
MMAP_THRESHOLD = 64 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
#: environment variable overriding MMAP_THRESHOLD in bytes (0 = leave glibc's rule)
MMAP_ENV = "SARREG_MMAP_THRESHOLD"


def bound_allocator(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes. Freed feature maps and
    full-resolution activations of that size (a 724 x 724 level: 67 MB and more) go back to the
    system at once, while the smaller temporaries (tiles, head terms, chunks of local
    descriptors) are reused from the heap instead of being mapped, zero-filled and unmapped each
    time. By default glibc raises the threshold after each freed large block (up to 32 MB), so
    that what it maps or keeps depends on the order of the allocations. Measured on the
    scaling benchmark's 1024 px pair (``sarreg register``, 2 cores, five runs): 16 MB: 3.28 s
    wall, 0.95 s system time, 565-576 MB peak; 64 MB: 3.10 s, 0.65 s, 594-642 MB.
    ``$SARREG_MMAP_THRESHOLD`` overrides ``threshold`` (0: leave glibc's rule). True when set
    (glibc), False elsewhere (nothing changes)."""
    import ctypes
    import ctypes.util

    if os.environ.get(MMAP_ENV):
        threshold = int(os.environ[MMAP_ENV])
    if threshold <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def prepare_inference(net, checkpoint_path: str | Path | None = None):
    """Once per process, after loading ``net``: :func:`bound_allocator` and :func:`attach`
    (the runtime chosen by ``$SARREG_INFERENCE``). Returns :func:`attach`'s result."""
    bound_allocator()
    return attach(net, checkpoint_path)


def runtime_choice() -> str:
    """``$SARREG_INFERENCE`` as one of 'auto', 'torch', 'onnx' (unset or unknown: 'torch')."""
    value = os.environ.get(RUNTIME_ENV, "torch").strip().lower() or "torch"
    if value not in ("auto", "torch", "onnx"):
        log.warning("%s=%s is not auto, torch or onnx; using torch", RUNTIME_ENV, value)
        return "torch"
    return value


def cache_dir() -> Path:
    """Folder of sarreg's caches (see module doc)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sarreg"


def stem_length(net) -> int:
    """Number of blocks of the stem: up to and including the first pooling block (0 = the
    network does not pool: no split)."""
    for i, block in enumerate(net.blocks):
        if block.pool_after:
            return i + 1
    return 0


def stem_radius(net) -> int:
    """Rows of the input that one stem output row depends on, above and below."""
    return sum(
        (b.conv.kernel_size[0] - 1) * b.conv.dilation[0] // 2
        for b in net.blocks[: stem_length(net)]
    )


def supported(net) -> str | None:
    """None when ``net`` can run through :class:`OnnxBackbone`, else the reason why not."""
    if getattr(net, "arch", None) != "fast_r2d2" or stem_length(net) == 0:
        return "not a Fast-R2D2 network"
    if getattr(net, "input_offset", None) is not None:
        return "the stem has an input offset (imported RGB network)"
    if stem_radius(net) > STEM_HALO:
        return f"the stem reaches {stem_radius(net)} rows, more than {STEM_HALO}"
    return None


def fingerprint(net) -> str:
    """sha256 (hex, first 24 digits) of the network's configuration, weights and buffers and
    :data:`EXPORT_VERSION`."""
    h = hashlib.sha256()
    h.update(json.dumps({"config": net.config, "export": EXPORT_VERSION}, sort_keys=True).encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _tensor_versions(net) -> tuple:
    """Identity and in-place version of every weight and buffer (changes when training)."""
    return tuple((id(t), t._version) for t in net.state_dict(keep_vars=True).values())


class _Stem(torch.nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(net.blocks[: stem_length(net)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Trunk(torch.nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(net.blocks[stem_length(net) :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 2, 3, 1)  # (B, h, w, dim): channels-last for dense_maps


def export_graphs(net, folder: Path, fp: str) -> tuple[Path, Path]:
    """Export ``net``'s stem and trunk to ``folder/stem.onnx``, ``folder/trunk.onnx`` (dynamic
    batch, height and width; fingerprint ``fp`` in the metadata), written atomically.
    Needs the ``onnx`` package (the PyTorch exporter's). Returns both paths."""
    import warnings

    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    c_in = int(net.in_channels)
    c_mid = int(net.blocks[stem_length(net) - 1].conv.out_channels)
    paths = []
    for name, module, channels in (("stem", _Stem(net), c_in), ("trunk", _Trunk(net), c_mid)):
        module.eval()  # the exporter restores the mode it found, on every submodule
        path = folder / f"{name}.onnx"
        tmp = folder / f".{name}.{os.getpid()}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.zeros(1, channels, 64, 64),),
                str(tmp),
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "B", 2: "H", 3: "W"}, "y": {0: "B", 1: "h", 2: "w"}},
                opset_version=_OPSET,
                dynamo=False,
            )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = "sarreg_fingerprint", fp
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


class OnnxBackbone:
    """``net.low_res_features(x, inference=True)`` through ONNX Runtime (see module doc).

    Args:
        net: the Fast-R2D2 network (eval mode) the graphs were exported from.
        stem_path, trunk_path: its exported graphs (:func:`export_graphs`).
        strip_pixels: full-resolution pixels per stem strip.
    """

    def __init__(
        self, net, stem_path: Path, trunk_path: Path, strip_pixels: int = STRIP_PIXELS
    ) -> None:
        self.paths = (Path(stem_path), Path(trunk_path))
        self.strip_pixels = int(strip_pixels)
        self.versions = _tensor_versions(net)
        self.in_channels = int(net.in_channels)
        self._sessions: dict[int, tuple] = {}

    def valid_for(self, net) -> bool:
        """The network's tensors are still those the graphs were exported from."""
        return _tensor_versions(net) == self.versions

    def sessions(self, threads: int):
        """``(stem, trunk)`` ONNX Runtime sessions with ``threads`` intra-op threads."""
        if threads not in self._sessions:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.enable_mem_pattern = False  # a pattern per input size only grows the arena
            # no busy-waiting threads: the machine is shared with other workers
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.log_severity_level = 3
            self._sessions[threads] = tuple(
                ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
                for p in self.paths
            )
        return self._sessions[threads]

    def strip_rows(self, width: int) -> int:
        """Rows of a stem strip for images ``width`` pixels wide (even, >= 16)."""
        rows = max(16, self.strip_pixels // max(1, width))
        return rows - rows % 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, dim, H // 2, W // 2)`` float32 in channels-last memory format of an
        image batch ``(B, C, H, W)`` (CPU)."""
        stem, trunk = self.sessions(torch.get_num_threads())
        img = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        b, _, h, w = img.shape
        rows = self.strip_rows(w)
        if h <= rows + 2 * STEM_HALO:
            mid = stem.run(None, {"x": img})[0]
        else:
            mid = None
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                t0, t1 = max(0, r0 - STEM_HALO), min(h, r1 + STEM_HALO)
                part = stem.run(None, {"x": np.ascontiguousarray(img[:, :, t0:t1])})[0]
                if mid is None:
                    mid = np.empty((b, part.shape[1], h // 2, w // 2), np.float32)
                k0 = (r0 - t0) // 2
                n = (r1 // 2) - (r0 // 2)
                mid[:, :, r0 // 2 : r0 // 2 + n] = part[:, :, k0 : k0 + n]
        out = trunk.run(None, {"x": mid})[0]  # (B, h, w, dim)
        return torch.from_numpy(out).permute(0, 3, 1, 2)


def shipped_folder(checkpoint_path: str | Path) -> Path:
    """Where the graphs of a checkpoint are shipped next to it: ``<stem>_onnx/``."""
    path = Path(checkpoint_path)
    return path.with_name(path.stem + "_onnx")


def _graph_fingerprint(path: Path) -> str | None:
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        meta = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return meta.get_modelmeta().custom_metadata_map.get("sarreg_fingerprint")
    except Exception:  # a damaged file: export again
        return None


def build_runtime(net, folders: list[Path] | None = None) -> OnnxBackbone:
    """An :class:`OnnxBackbone` of ``net``: the graphs in the first of ``folders``, then the
    cache, whose fingerprint matches, else freshly exported into the cache. Raises
    ImportError without onnxruntime (or onnx, for an export) and ValueError for a network
    that cannot be split."""
    import onnxruntime  # noqa: F401  (fail early, before any export)

    why = supported(net)
    if why is not None:
        raise ValueError(why)
    fp = fingerprint(net)
    cache = cache_dir() / "onnx" / fp
    for folder in [*(folders or []), cache]:
        stem, trunk = folder / "stem.onnx", folder / "trunk.onnx"
        if stem.is_file() and trunk.is_file():
            if _graph_fingerprint(stem) == fp and _graph_fingerprint(trunk) == fp:
                return OnnxBackbone(net, stem, trunk)
    log.info("exporting the network to ONNX into %s (once per model)", cache)
    stem, trunk = export_graphs(net, cache, fp)
    return OnnxBackbone(net, stem, trunk)


def attach(net, checkpoint_path: str | Path | None = None, choice: str | None = None):
    """Attach the runtime ``choice`` (default :func:`runtime_choice`) to ``net``: its
    ``dense_maps`` then runs the backbone through ONNX Runtime, from the graphs shipped next
    to ``checkpoint_path`` (:func:`shipped_folder`) or the cache. Returns the
    :class:`OnnxBackbone`, or None for PyTorch ('torch', or 'auto' where ONNX Runtime is
    unavailable or fails; logged)."""
    choice = choice or runtime_choice()
    with _lock:
        _runtimes.pop(net, None)
        if choice == "torch":
            return None
        try:
            shipped = [shipped_folder(checkpoint_path)] if checkpoint_path else []
            rt = build_runtime(net, shipped)
        except Exception as err:
            if choice == "onnx":
                raise
            log.info("inference with PyTorch (ONNX Runtime not used: %s)", err)
            return None
        _runtimes[net] = rt
        return rt


def backbone_for(net, x: torch.Tensor):
    """The attached runtime when it can run ``x`` through ``net`` now (eval mode, CPU input,
    unchanged weights), else None (PyTorch)."""
    rt = _runtimes.get(net)
    if rt is None or net.training or x.device.type != "cpu" or x.requires_grad:
        return None
    if not rt.valid_for(net):
        log.debug("network changed since its ONNX export; using PyTorch")
        return None
    return rt
