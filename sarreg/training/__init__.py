"""Training of the SAR keypoint network (R2D2 objective on synthetic and multi-date pairs).

Modules: ``synth`` (pair synthesis), ``data`` (sources, batches, validation pairs),
``sampler`` and ``losses`` (the R2D2 objective), ``step`` (forward + losses), ``validate``
(MMA), ``config`` (YAML presets shipped in ``sarreg/configs/``) and ``loop``
(:func:`loop.train`). Nothing is imported here, so ``import sarreg.training`` is cheap.
"""
