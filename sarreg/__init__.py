"""sarreg: register SAR images with a Fast-R2D2 keypoint network trained for radar."""

__version__ = "0.1.0"
