"""Registry of the registration methods compared by ``sarreg evaluate run``.

Every keypoint method turns an image into keypoints ``(N, 2)`` (pixel centres) and descriptors
``(N, D)``; matching is mutual nearest neighbours for all of them (cosine / L2 on unit vectors
through :func:`sarreg.matching.match_mutual`, Hamming for the binary ORB and AKAZE
descriptors), and the transform is estimated by the same :func:`sarreg.geometry.fit_transform`
(done by the runner). Phase correlation is area based and returns a translation directly.

Names (``--method``):

- ``sarreg``: the bundled model; ``sarreg:PATH``: any checkpoint (sarreg or naver R2D2 format).
  Input: the image normalized by :func:`sarreg.preprocess.preprocess` (as at inference).
- ``register``: the whole ``sarreg register`` path (:func:`sarreg.pipeline.register`: coarse
  pass, orientation / scale / flip search, verification, error estimate) on the pair's files,
  with the pair's transform model and, for pairs tagged ``allow_reflection``, that setting;
  ``register:PATH`` with another checkpoint. A refused pair (failed verification, implausible
  or mirrored transform) is a failure. Its records carry the report's predicted error next to
  the true error at the same points (:func:`sarreg.uncertainty.true_error`).
- ``sift``, ``akaze``, ``orb``: OpenCV, on the same normalized image as 8 bit. AKAZE comes from
  ``cv2.xfeatures2d`` (OpenCV 5 contrib, a dependency) or ``cv2`` (4.x): where it is missing it is
  left out of the default list and naming it is an error that says so.
- ``sarsift``: SAR-SIFT (:mod:`sarreg.evaluation.sarsift`), on linear intensity.
- ``phasecorr``: ``skimage.registration.phase_cross_correlation`` (upsampled 10x) on the
  normalized log-intensity image; translation only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarreg.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: method names accepted by :func:`make_method` (``sarreg:PATH`` and ``register:PATH`` too)
METHOD_NAMES: tuple[str, ...] = (
    "register", "sarreg", "sift", "akaze", "orb", "sarsift", "phasecorr",
)  # fmt: skip


def _akaze_factory():
    """OpenCV's AKAZE constructor, or ``None``: OpenCV 5 moved AKAZE to the contrib modules
    (``cv2.xfeatures2d``, in ``opencv-contrib-python-headless``, which sarreg depends on)."""
    import cv2

    xf = getattr(cv2, "xfeatures2d", None)
    return getattr(cv2, "AKAZE_create", None) or getattr(xf, "AKAZE_create", None)


def akaze_available() -> bool:
    """Whether this OpenCV has AKAZE."""
    return _akaze_factory() is not None


def default_methods() -> tuple[str, ...]:
    """All methods this installation can run (AKAZE only where OpenCV has it)."""
    return tuple(m for m in METHOD_NAMES if m != "akaze" or akaze_available())


@dataclass
class PreparedImage:
    """A benchmark image in the forms the methods need.

    Attributes:
        path: source file.
        image: ``(H, W)`` float32 in ``[0, 1]`` (``sarreg.preprocess``; log scaled).
        kp_mask: ``(H, W)`` bool, keypoints allowed (valid, away from nodata).
        valid: ``(H, W)`` bool, valid pixels.
        intensity: ``(H, W)`` float32 linear intensity, invalid pixels 0.
    """

    path: Path
    image: np.ndarray
    kp_mask: np.ndarray
    valid: np.ndarray
    intensity: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @classmethod
    def from_intensity(
        cls, intensity: np.ndarray, valid: np.ndarray | None = None, path: str | Path = ""
    ) -> PreparedImage:
        """From a linear intensity array ``(H, W)`` and its valid mask (None = all valid)."""
        from sarreg.preprocess import preprocess

        x = np.asarray(intensity, np.float32)
        v = np.isfinite(x) if valid is None else np.asarray(valid, bool) & np.isfinite(x)
        image, kp_mask = preprocess(x, v, "power")
        return cls(Path(path), image, kp_mask, v, np.where(v, x, 0.0).astype(np.float32))


def prepare_image(path: str | Path, display_as: str = "intensity") -> PreparedImage:
    """Read band 1 of ``path`` (:func:`sarreg.io.read_raster`, kind auto) and normalize it."""
    from sarreg.io import read_raster
    from sarreg.preprocess import preprocess
    from sarreg.training.synth import to_linear_intensity

    r = read_raster(path)
    image, kp_mask = preprocess(r.data, r.mask, r.kind)
    intensity = to_linear_intensity(r.data, r.kind, display_as)
    intensity = np.where(r.mask & np.isfinite(intensity), intensity, 0.0).astype(np.float32)
    return PreparedImage(Path(path), image, kp_mask, r.mask.copy(), intensity)


@dataclass
class KeypointSet:
    """Keypoints ``xy`` ``(N, 2)`` float64 and descriptors ``(N, D)`` of one image;
    ``binary``: uint8 packed descriptors compared by Hamming distance; ``features``: sarreg's
    :class:`~sarreg.features.Features` behind them (sarreg methods only)."""

    xy: np.ndarray
    descriptors: np.ndarray
    binary: bool = False
    features: object | None = None

    def __len__(self) -> int:
        return int(self.xy.shape[0])


class Method:
    """Base class. Keypoint methods implement :meth:`describe`; direct ones :meth:`estimate`.

    Attributes:
        name: the name given on the command line.
        label: the name shown in tables.
        direct: True for methods that estimate a transform without keypoints.
    """

    name: str = ""
    label: str = ""
    direct: bool = False

    def __init__(self, max_keypoints: int = 2000) -> None:
        self.max_keypoints = int(max_keypoints)

    def describe(self, img: PreparedImage) -> KeypointSet:  # pragma: no cover - interface
        raise NotImplementedError

    def estimate(self, ref: PreparedImage, mov: PreparedImage) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def match(self, ref: KeypointSet, mov: KeypointSet) -> tuple[np.ndarray, np.ndarray]:
        """Matched positions ``(xy_ref (K, 2), xy_mov (K, 2))`` float64, pixel centres."""
        i_ref, i_mov = self.match_indices(ref, mov)
        return ref.xy[i_ref], mov.xy[i_mov]

    def match_indices(self, ref: KeypointSet, mov: KeypointSet) -> tuple[np.ndarray, np.ndarray]:
        """Mutual nearest neighbours: ``(idx_ref (K,), idx_mov (K,))`` int64."""
        empty = np.zeros(0, np.int64)
        if len(ref) == 0 or len(mov) == 0:
            return empty, empty
        if ref.binary:
            import cv2

            bf = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
            ms = bf.match(mov.descriptors, ref.descriptors)
            i_mov = np.array([m.queryIdx for m in ms], np.int64)
            i_ref = np.array([m.trainIdx for m in ms], np.int64)
            return i_ref, i_mov
        from sarreg.matching import MatchConfig, match_mutual

        m = match_mutual(
            _unit(ref.descriptors), _unit(mov.descriptors), MatchConfig(min_similarity=-1.0)
        )
        return m.idx_ref, m.idx_mov


def _unit(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


class SarregMethod(Method):
    """sarreg's network through :func:`sarreg.features.extract` (default pyramid), matched
    as ``sarreg register`` does: mutual nearest neighbours, then the moving keypoints refined
    by their neighbourhood descriptors (:func:`sarreg.matching.refine_keypoints`)."""

    def __init__(self, checkpoint: str | None = None, max_keypoints: int = 2000) -> None:
        super().__init__(max_keypoints)
        self.checkpoint = checkpoint
        self.name = "sarreg" if checkpoint is None else f"sarreg:{checkpoint}"
        self.label = "sarreg" if checkpoint is None else f"sarreg ({Path(checkpoint).name})"
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise CheckpointError(
                f"checkpoint not found: {checkpoint}",
                "give an existing sarreg or naver R2D2 checkpoint after 'sarreg:'",
            )
        self._net = None
        if checkpoint is not None:
            self._load()  # a checkpoint that cannot load stops the run (exit 13), before any pair

    def _load(self):
        if self._net is None:
            from sarreg.pipeline import load_model  # cached per process, as for register

            self._net = load_model(self.checkpoint).net
        return self._net

    def describe(self, img: PreparedImage) -> KeypointSet:
        from sarreg.features import ExtractConfig, extract

        cfg = ExtractConfig(top_k=self.max_keypoints, progress=False)
        if max(img.shape) < cfg.min_size:  # what extract() falls back to, without its warning
            cfg = ExtractConfig(top_k=self.max_keypoints, progress=False, scales=(1.0,))
        f = extract(self._load(), img.image, img.kp_mask, cfg)
        return KeypointSet(f.keypoints.astype(np.float64), f.descriptors, features=f)

    def match(self, ref: KeypointSet, mov: KeypointSet) -> tuple[np.ndarray, np.ndarray]:
        from sarreg.matching import MatchConfig, matched_points

        if len(ref) == 0 or len(mov) == 0:
            return np.zeros((0, 2)), np.zeros((0, 2))
        _, xy_ref, xy_mov = matched_points(
            ref.features, mov.features, MatchConfig(min_similarity=-1.0)
        )
        return xy_ref, xy_mov


class RegisterMethod(Method):
    """The whole registration path, :func:`sarreg.pipeline.register`, on the pair's files
    (no output written). Direct: :meth:`register_pair` returns the fitted matrix (moving px ->
    reference px) and the report's figures."""

    direct = True

    def __init__(
        self,
        checkpoint: str | None = None,
        max_keypoints: int = 2000,
        overrides: dict | None = None,
    ) -> None:
        super().__init__(max_keypoints)
        self.checkpoint = checkpoint
        self.overrides = dict(overrides or {})  # other settings, dotted names (benchmarks)
        self.name = "register" if checkpoint is None else f"register:{checkpoint}"
        self.label = (
            "sarreg register"
            if checkpoint is None
            else f"sarreg register ({Path(checkpoint).name})"
        )
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise CheckpointError(
                f"checkpoint not found: {checkpoint}",
                "give an existing sarreg or naver R2D2 checkpoint after 'register:'",
            )

    def register_pair(
        self, ref: PreparedImage, mov: PreparedImage, model: str, tags: dict | None = None
    ) -> dict:
        """Register ``mov`` onto ``ref`` (their files) with transform ``model``.

        Returns ``{"matrix": (3, 3) moving px -> reference px, "predicted_error": reference
        px, "matches": int, "inliers": int, "hypothesis": the search's winner (dict) or
        None}``. Raises the registration's :class:`~sarreg.errors.SarregError` when it
        refuses the pair.
        """
        from sarreg.config import RegisterConfig, with_values
        from sarreg.pipeline import register

        tags = tags or {}
        cfg = with_values(
            RegisterConfig(model=self.checkpoint),
            {
                "estimate.transform": model,
                "estimate.allow_reflection": bool(tags.get("allow_reflection", False)),
                **self.overrides,
            },
        )
        res = register(ref.path, mov.path, None, cfg)
        search = res.report.get("search")
        return {
            "matrix": np.asarray(res.matrix, np.float64),
            "predicted_error": float(res.predicted_error),
            "matches": int(res.n_matches),
            "inliers": int(res.n_inliers),
            "hypothesis": search.get("hypothesis") if isinstance(search, dict) else None,
        }


class OpenCVMethod(Method):
    """OpenCV SIFT / AKAZE / ORB on the normalized image as 8 bit, top ``max_keypoints`` by
    detector response."""

    def __init__(self, which: str, max_keypoints: int = 2000) -> None:
        super().__init__(max_keypoints)
        self.name = which
        self.label = {"sift": "SIFT", "akaze": "AKAZE", "orb": "ORB"}[which]

    def _detector(self):
        import cv2

        if self.name == "sift":
            return cv2.SIFT_create(nfeatures=self.max_keypoints)
        if self.name == "orb":
            return cv2.ORB_create(nfeatures=self.max_keypoints)
        # the default threshold (1e-3) finds few points on speckled images; rank instead
        return _akaze_factory()(threshold=1e-4)

    def describe(self, img: PreparedImage) -> KeypointSet:
        u8 = np.clip(np.rint(img.image * 255.0), 0, 255).astype(np.uint8)
        mask = img.kp_mask.astype(np.uint8) * 255
        det = self._detector()
        kps = det.detect(u8, mask)
        kps = sorted(kps, key=lambda k: -k.response)[: self.max_keypoints]
        if kps:
            kps, desc = det.compute(u8, kps)
        binary = self.name != "sift"
        if not kps or desc is None:
            dim = 128 if not binary else 32
            return KeypointSet(np.zeros((0, 2)), np.zeros((0, dim), np.float32), binary)
        xy = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
        return KeypointSet(xy, desc, binary)


class SarSiftMethod(Method):
    """SAR-SIFT (our implementation of Dellinger et al. 2015) on linear intensity."""

    name = "sarsift"
    label = "SAR-SIFT"

    def describe(self, img: PreparedImage) -> KeypointSet:
        from sarreg.evaluation.sarsift import SarSiftConfig, detect_and_describe

        f = detect_and_describe(
            img.intensity, img.kp_mask, SarSiftConfig(max_keypoints=self.max_keypoints)
        )
        return KeypointSet(f.keypoints.astype(np.float64), f.descriptors)


class PhaseCorrMethod(Method):
    """Phase correlation of the normalized log-intensity images: a translation."""

    name = "phasecorr"
    label = "phase correlation"
    direct = True

    def estimate(self, ref: PreparedImage, mov: PreparedImage) -> np.ndarray:
        from skimage.registration import phase_cross_correlation

        h = max(ref.shape[0], mov.shape[0])
        w = max(ref.shape[1], mov.shape[1])
        a = _pad(ref.image - ref.image[ref.valid].mean(), (h, w))
        b = _pad(mov.image - mov.image[mov.valid].mean(), (h, w))
        a[: ref.shape[0], : ref.shape[1]][~ref.valid] = 0.0
        b[: mov.shape[0], : mov.shape[1]][~mov.valid] = 0.0
        shift, _, _ = phase_cross_correlation(a, b, upsample_factor=10)
        m = np.eye(3)
        m[0, 2], m[1, 2] = float(shift[1]), float(shift[0])  # moving shifted by it = reference
        return m


def _pad(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.float64)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def make_method(spec: str, max_keypoints: int = 2000) -> Method:
    """A :class:`Method` from its name (see the module docstring).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
        CheckpointError: ``sarreg:PATH`` with a missing file.
    """
    s = spec.strip()
    low = s.lower()
    if low == "register":
        return RegisterMethod(None, max_keypoints)
    if low.startswith("register:"):
        path = s.split(":", 1)[1]
        if not path:
            raise ConfigError("--method register: needs a checkpoint path", "e.g. register:best.pt")
        return RegisterMethod(path, max_keypoints)
    if low == "sarreg":
        return SarregMethod(None, max_keypoints)
    if low.startswith("sarreg:"):
        path = s.split(":", 1)[1]
        if not path:
            raise ConfigError("--method sarreg: needs a checkpoint path", "e.g. sarreg:best.pt")
        return SarregMethod(path, max_keypoints)
    if low == "akaze" and not akaze_available():
        import cv2

        raise ConfigError(
            f"AKAZE is not available in OpenCV {cv2.__version__} (OpenCV 5 moved it to the "
            "contrib modules)",
            "install an OpenCV build with AKAZE (4.x, or opencv-contrib-python-headless 5.x), "
            "or leave akaze out",
        )
    if low in ("sift", "akaze", "orb"):
        return OpenCVMethod(low, max_keypoints)
    if low in ("sarsift", "sar-sift"):
        return SarSiftMethod(max_keypoints)
    if low in ("phasecorr", "phase", "phase-correlation"):
        return PhaseCorrMethod(max_keypoints)
    raise ConfigError(
        f"unknown method {spec!r}",
        "valid methods: register, register:PATH, sarreg, sarreg:PATH/TO/CHECKPOINT, sift, "
        "akaze, orb, sarsift, phasecorr",
    )


def make_methods(specs: list[str] | tuple[str, ...], max_keypoints: int = 2000) -> list[Method]:
    """Methods for ``specs`` (comma-separated entries are split), duplicates removed."""
    names: list[str] = []
    for s in specs:
        names.extend(p for p in (q.strip() for q in str(s).split(",")) if p)
    if not names:
        raise ConfigError("no method given", f"choose among {', '.join(METHOD_NAMES)}")
    out: list[Method] = []
    seen = set()
    for n in names:
        m = make_method(n, max_keypoints)
        if m.name not in seen:
            seen.add(m.name)
            out.append(m)
    return out
