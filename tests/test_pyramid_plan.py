"""The coarse pass's pyramid for georeferenced pairs: a read larger than 768 x 768 pixels
runs one level, scaled to fit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sarreg.config import RegisterConfig, georef_coarse_scales, pyramid_plan


def test_a_read_too_large_runs_only_the_first_level_scaled_to_fit():
    s = (1.0, 2**-0.5)
    assert georef_coarse_scales(s, 1024, 768) == pytest.approx([2**-0.5])
    assert georef_coarse_scales(s, 768, 768) == pytest.approx(s)
    assert georef_coarse_scales(s, 769, 768) == pytest.approx([2**-0.5])
    assert georef_coarse_scales(s, 4096, 768) == pytest.approx([2**-2.5])
    assert georef_coarse_scales((0.5, 0.25), 1024, 768) == (0.5, 0.25)  # already fits
    assert georef_coarse_scales(s, None, 768) == s
    assert georef_coarse_scales(s, 1024, None) == s


def test_plan_caps_the_first_level_of_any_coarse_read_and_says_so():
    config = RegisterConfig()
    small = pyramid_plan(config, True, 768)  # e.g. 768 x 768, or 1024 x 576 pixels
    assert small.coarse == pytest.approx([1.0, 2**-0.5])
    assert "georef_max_level" not in small.rule
    capped = pyramid_plan(config, True, 1024)  # a 1024 px image read whole, or a coarse read
    assert capped.coarse == pytest.approx([2**-0.5])
    assert "georef_max_level" in capped.rule
    off = replace(config, estimate=replace(config.estimate, georef_max_level=None))
    assert pyramid_plan(off, True, 1024).coarse == pytest.approx([1.0, 2**-0.5])
    assert pyramid_plan(config, False, 1024).coarse is None  # not georeferenced


def test_a_coarse_pass_that_seeds_tiles_caps_its_level_at_coarse_max_level():
    """``tiling.coarse_max_level`` (512): the coarse pass under tiles runs a 1024 px read at
    512 px, not 724; the smaller of it and ``estimate.georef_max_level`` applies."""
    from sarreg.config import TilingConfig

    config = RegisterConfig()
    plan = pyramid_plan(config, True, 1024)
    assert plan.coarse == pytest.approx([2**-0.5])  # the coarse pass as the result
    assert plan.coarse_scales(False) == plan.coarse
    assert plan.coarse_scales(True) == pytest.approx([0.5])  # seeding tiles
    assert "tiling.coarse_max_level = 512" in plan.rule
    assert plan.to_dict()["coarse_before_tiles"] == pytest.approx([0.5])
    small = pyramid_plan(config, True, 512)  # fits both caps: one plan
    assert small.seed is None and small.coarse_scales(True) == small.coarse
    assert "coarse_max_level" not in small.rule
    assert small.to_dict()["coarse_before_tiles"] == pytest.approx([1.0, 2**-0.5])
    for cap in (None, 2000):  # none, or larger than georef_max_level: no second plan
        wide = pyramid_plan(replace(config, tiling=TilingConfig(coarse_max_level=cap)), True, 1024)
        assert wide.seed is None and wide.coarse_scales(True) == pytest.approx([2**-0.5])
    assert pyramid_plan(config, False, 1024).coarse_scales(True) is None  # not georeferenced


def test_validating_a_config_imports_no_numpy():
    import subprocess
    import sys

    prog = (
        "import sys\nimport sarreg.config as c\n"
        "c.validate_config(c.RegisterConfig())\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
