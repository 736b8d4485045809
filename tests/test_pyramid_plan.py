"""The coarse pass's pyramid for georeferenced pairs: capped only when tiles refine it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sarreg.config import RegisterConfig, georef_coarse_scales, pyramid_plan


def test_scales_step_down_until_the_first_level_fits():
    s = (1.0, 2**-0.5)
    assert georef_coarse_scales(s, 1024, 768) == pytest.approx([2**-0.5, 0.5])
    assert georef_coarse_scales(s, 768, 768) == pytest.approx(s)
    assert georef_coarse_scales(s, 4096, 768) == pytest.approx([2**-2.5, 2**-3])
    assert georef_coarse_scales(s, None, 768) == s
    assert georef_coarse_scales(s, 1024, None) == s


def test_plan_caps_only_the_tiled_case_and_says_so():
    config = RegisterConfig()
    full = pyramid_plan(config, True, None)  # no tiles: the coarse pass is the result
    assert full.coarse == pytest.approx([1.0, 2**-0.5])
    capped = pyramid_plan(config, True, 1024)
    assert capped.coarse == pytest.approx([2**-0.5, 0.5])
    assert "georef_max_level" in capped.rule
    off = replace(config, estimate=replace(config.estimate, georef_max_level=None))
    assert pyramid_plan(off, True, 1024).coarse == pytest.approx([1.0, 2**-0.5])
    assert pyramid_plan(config, False, 1024).coarse is None  # not georeferenced


def test_coarse_read_side_is_none_without_tiles():
    from types import SimpleNamespace

    from sarreg.inputs import coarse_read_side

    config = RegisterConfig()

    def inputs(shape):
        info = SimpleNamespace(shape=shape)
        return SimpleNamespace(ref_info=info, mov_info=info, prior_scale=1.0)

    assert coarse_read_side(inputs((1024, 1024)), config) is None
    assert coarse_read_side(inputs((1000, 700)), config) is None
    assert coarse_read_side(inputs((4096, 2048)), config) == 1024


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
