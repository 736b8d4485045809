"""Networks and checkpoints."""

from sarreg.model.checkpoint import (
    Checkpoint,
    default_model_path,
    import_naver,
    load_checkpoint,
    load_default_model,
    load_model,
    save_checkpoint,
)
from sarreg.model.r2d2 import (
    ARCHITECTURES,
    DenseMaps,
    R2D2Net,
    build_model,
    descriptors_at,
    flops_per_pixel,
)

__all__ = [
    "ARCHITECTURES",
    "Checkpoint",
    "DenseMaps",
    "R2D2Net",
    "build_model",
    "default_model_path",
    "descriptors_at",
    "flops_per_pixel",
    "import_naver",
    "load_checkpoint",
    "load_default_model",
    "load_model",
    "save_checkpoint",
]
