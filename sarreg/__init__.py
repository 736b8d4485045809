"""sarreg: register SAR images with a Fast-R2D2 keypoint network trained for radar.

Python API (imported on first use, so ``import sarreg`` does no work)::

    from sarreg import register, RegisterConfig

    result = register("reference.tif", "moving.tif", "aligned.tif", RegisterConfig())
    print(result.n_inliers, result.rmse, result.report["transform"]["pixel_matrix"])

:func:`register` is :func:`sarreg.pipeline.register` and :class:`RegistrationResult` comes
from :mod:`sarreg.pipeline`; :class:`RegisterConfig` (one group of settings per stage) from
:mod:`sarreg.config`, which imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["register", "RegisterConfig", "RegistrationResult", "__version__"]

_LAZY = {
    "register": "sarreg.pipeline",
    "RegisterConfig": "sarreg.config",
    "RegistrationResult": "sarreg.pipeline",
}

if TYPE_CHECKING:
    from sarreg.config import RegisterConfig
    from sarreg.pipeline import RegistrationResult, register


def __getattr__(name: str) -> Any:
    """Import the public API from its module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sarreg' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
