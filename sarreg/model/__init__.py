"""Networks and checkpoints."""

from sarreg.model.r2d2 import ARCHITECTURES, R2D2Net, build_model, flops_per_pixel

__all__ = ["ARCHITECTURES", "R2D2Net", "build_model", "flops_per_pixel"]
