"""Settings validation: every bad option value is refused with exit 12 and one line, before any
extraction or model loading; the transform model table."""

from __future__ import annotations

import sys

import pytest

from sarreg.cli import main
from sarreg.config import TRANSFORM_MODELS, check_value, validate_config
from sarreg.errors import ConfigError
from sarreg.pipeline import RegisterConfig

DEMO_REF = "data/demo/reference.tif"
DEMO_MOV = "data/demo/moving.tif"

BAD_OPTIONS = [
    ("--top-k", "0"),
    ("--top-k", "-3"),
    ("--ratio", "-1"),
    ("--ratio", "0"),
    ("--ratio", "1.5"),
    ("--min-similarity", "2"),
    ("--min-similarity", "-1.5"),
    ("--search-radius", "-1"),
    ("--search-radius", "0"),
    ("--ransac-threshold", "-1"),
    ("--ransac-threshold", "0"),
    ("--max-size", "0"),
    ("--max-size", "-5"),
    ("--min-inliers", "-1"),
    ("--seed", "-1"),
    ("--tiles", "0"),
    ("--tile-size", "16"),
    ("--window-size", "-1"),
    ("--scales", "0,1"),
    ("--scales", "1,9"),
    ("--transform", "shear"),
    ("--mode", "warp"),
    ("--resampling", "lanczos"),
    ("--kind-ref", "complex"),
    ("--gcps", "tie.txt"),
]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [(f, v, 12) for f, v in BAD_OPTIONS] + [("--band-ref", "0", 4), ("--band-mov", "-2", 4)],
)
def test_bad_option_exits_12_with_one_line_before_any_work(
    flag, value, expected, tmp_path, capsys
):
    # a model that does not exist: loading it would fail with another exit code, so exit 12
    # proves the value was refused before the model (or any pixel) was touched
    code = main(
        [
            "register",
            DEMO_REF,
            DEMO_MOV,
            "-o",
            str(tmp_path / "o.tif"),
            "--no-progress",
            "--model",
            str(tmp_path / "missing.pt"),
            flag,
            value,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == expected, err  # 4 = band out of range (README's table), else 12
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--top-k", "0"), ("--ratio", "-1"), ("--max-size", "0"), ("--min-inliers", "-1")],
)
def test_batch_refuses_the_same_values(flag, value, tmp_path, capsys):
    code = main(
        [
            "batch",
            "-r",
            DEMO_REF,
            DEMO_MOV,
            "-o",
            str(tmp_path / "out"),
            "--workers",
            "0",
            "--no-progress",
            flag,
            value,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 12 and len(err.splitlines()) == 1 and flag in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_library_config_is_validated_in_register(tmp_path):
    from sarreg.pipeline import register

    for cfg in (
        RegisterConfig(max_size=0),
        RegisterConfig(min_inliers=-1),
        RegisterConfig(tile_min_valid=2.0),
        RegisterConfig(scale_range=(2.0, 1.0)),
    ):
        with pytest.raises(ConfigError) as info:
            register(DEMO_REF, DEMO_MOV, tmp_path / "o.tif", cfg)
        assert len(str(info.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_default_config_is_valid_and_messages_name_range():
    validate_config(RegisterConfig())
    with pytest.raises(ConfigError, match=r"--top-k 0 is out of range; use an integer >= 1"):
        check_value("extract.top_k", 0)
    with pytest.raises(ConfigError, match=r"setting tile_min_valid"):
        check_value("tile_min_valid", -0.1)
    check_value("match.ratio", None)  # optional: None = no ratio test


def test_transform_table_agrees_with_geometry_and_mapping():
    from sarreg.geometry import MIN_INLIERS, MODELS
    from sarreg.mapping import MIN_POINTS, NONLINEAR_MODELS

    assert tuple(TRANSFORM_MODELS) == MODELS + NONLINEAR_MODELS
    for name, m in TRANSFORM_MODELS.items():
        assert m.min_points == (MIN_INLIERS[name] if m.linear else MIN_POINTS[name])
        assert m.linear == (name in MODELS)
        assert m.geotransform == (name in ("translation", "similarity", "affine"))


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--top-k", "0"], 12), (["--band-ref", "9"], 4)],
)
def test_bad_option_or_input_fails_without_importing_torch(args, code, tmp_path):
    import subprocess

    prog = (
        "import sys\nfrom sarreg.cli import main\n"
        f"rc = main(['register', {DEMO_REF!r}, {DEMO_MOV!r}, '-o', {str(tmp_path / 'o.tif')!r}]"
        f" + {args!r})\n"
        f"assert rc == {code}, rc\nassert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
