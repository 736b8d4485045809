"""Evaluation: synthetic benchmarks, matching / registration metrics and baseline methods.

Modules: :mod:`~sarreg.evaluation.bench` (benchmark format), :mod:`~sarreg.evaluation.synth`
(benchmark builder), :mod:`~sarreg.evaluation.metrics` (MMA, repeatability, RMSE, success),
:mod:`~sarreg.evaluation.methods` (method registry), :mod:`~sarreg.evaluation.sarsift`
(SAR-SIFT), :mod:`~sarreg.evaluation.run` (runner), :mod:`~sarreg.evaluation.tables`
(Markdown / CSV / JSON / plot). Nothing is imported here (no import-time work).
"""
