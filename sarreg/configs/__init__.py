"""Training presets shipped with the package (``sarreg train --config NAME``)."""
