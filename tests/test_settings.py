"""Settings validation: every bad option value is refused with exit 12 and one line, before any
extraction or model loading; the transform model table."""

from __future__ import annotations

import functools
import sys

import pytest

from sarreg.cli import main
from sarreg.config import (
    RULES,
    TRANSFORM_MODELS,
    EstimateConfig,
    InputConfig,
    OutputConfig,
    RegisterConfig,
    TilingConfig,
    check_value,
    get_value,
    validate_config,
    with_values,
)
from sarreg.errors import ConfigError

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
def test_bad_option_exits_12_with_one_line_before_any_work(flag, value, expected, tmp_path, capsys):
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


def _batch_flags() -> set[str]:
    from sarreg.cli.options import BATCH, options_of

    return {o.flag for o in options_of(BATCH)}


@pytest.mark.parametrize(("flag", "value"), [(f, v) for f, v in BAD_OPTIONS if f in _batch_flags()])
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
        RegisterConfig(input=InputConfig(max_size=0)),
        RegisterConfig(estimate=EstimateConfig(min_inliers=-1)),
        RegisterConfig(tiling=TilingConfig(min_valid=2.0)),
        RegisterConfig(estimate=EstimateConfig(scale_range=(2.0, 1.0))),
        RegisterConfig(output=OutputConfig(gcps="tie.txt")),
    ):
        with pytest.raises(ConfigError) as info:
            register(DEMO_REF, DEMO_MOV, tmp_path / "o.tif", cfg)
        assert len(str(info.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_default_config_is_valid_and_messages_name_range():
    validate_config(RegisterConfig())
    with pytest.raises(ConfigError, match=r"--top-k 0 is out of range; use an integer >= 1"):
        check_value("extract.top_k", 0)
    with pytest.raises(ConfigError, match=r"setting tiling.min_valid -0.1 is out of range"):
        check_value("tiling.min_valid", -0.1)
    with pytest.raises(ConfigError, match=r"tiling.coarse_max_level 32 .*64..8192"):
        check_value("tiling.coarse_max_level", 32)
    check_value("tiling.coarse_max_level", None)  # optional: None = estimate.georef_max_level
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


HEAVY = ("torch", "dask", "matplotlib", "scipy", "shapely")


def _imports_after(prog: str) -> list[str]:
    """The heavy modules imported after running ``prog`` in a fresh interpreter."""
    import subprocess

    found = f"','.join(m for m in {HEAVY!r} if m in sys.modules)"
    code = f"import sys\n{prog}\nprint('heavy:' + {found})\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("heavy:"), proc.stdout
    return [m for m in line.removeprefix("heavy:").split(",") if m]


def test_config_and_its_validation_import_no_heavy_module():
    prog = (
        "import sarreg.config as c\n"
        "cfg = c.RegisterConfig()\n"
        "c.validate_config(cfg)\n"
        "c.validate_config(c.with_values(cfg, {'estimate.transform': 'poly2'}))\n"
    )
    assert _imports_after(prog) == []


@pytest.mark.parametrize("command", ["register", "batch"])
def test_help_imports_no_heavy_module(command):
    prog = (
        "from sarreg.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main([{command!r}, '--help']) == 0\n"
    )
    assert _imports_after(prog) == []


def test_stage_configs_are_the_ones_of_the_stages():
    from sarreg import config, features, matching

    assert features.ExtractConfig is config.ExtractConfig
    assert matching.MatchConfig is config.MatchConfig
    cfg = RegisterConfig()
    assert isinstance(cfg.extract, features.ExtractConfig)
    assert isinstance(cfg.match, matching.MatchConfig)


def test_every_rule_names_a_setting_of_the_config():
    cfg = RegisterConfig()
    for rule in RULES:
        get_value(cfg, rule.key)  # AttributeError for a rule of a setting that does not exist


def test_with_values_sets_nested_settings_and_refuses_unknown_ones():
    cfg = with_values(RegisterConfig(), {"estimate.transform": "tps", "extract.top_k": 7})
    assert cfg.estimate.transform == "tps" and cfg.extract.top_k == 7
    assert RegisterConfig().estimate.transform == "affine"  # the original is unchanged
    with pytest.raises(ConfigError, match="unknown setting 'tile_size'"):
        with_values(RegisterConfig(), {"tiling.tile_size": 256})


#: per option of the table: CLI arguments, the setting they must set, and its value
OPTION_CASES = {
    "model": (["--model", "m.pt"], "model", "m.pt"),
    "transform": (["-t", "similarity"], "estimate.transform", "similarity"),
    "mode": (["--mode", "georef"], "output.mode", "georef"),
    "resampling": (["--resampling", "cubic"], "output.resampling", "cubic"),
    "band_ref": (["--band-ref", "2"], "input.band_ref", 2),
    "band_mov": (["--band-mov", "3"], "input.band_mov", 3),
    "kind_ref": (["--kind-ref", "db"], "input.kind_ref", "db"),
    "kind_mov": (["--kind-mov", "power"], "input.kind_mov", "power"),
    "max_size": (["--max-size", "2048"], "input.max_size", 2048),
    "top_k": (["--top-k", "300"], "extract.top_k", 300),
    "scales": (["--scales", "1,0.5"], "extract.scales", (1.0, 0.5)),
    "context": (["--no-context"], "extract.context_scale", None),
    "min_similarity": (["--min-similarity", "0.7"], "match.min_similarity", 0.7),
    "ratio": (["--ratio", "0.9"], "match.ratio", 0.9),
    "no_prior": (["--no-prior"], "estimate.use_prior", False),
    "search_radius": (["--search-radius", "12"], "estimate.search_radius", 12.0),
    "ransac_threshold": (["--ransac-threshold", "1.5"], "estimate.ransac_threshold", 1.5),
    "min_inliers": (["--min-inliers", "25"], "estimate.min_inliers", 25),
    "report": (["--report", "r.json"], "output.report", "r.json"),
    "plot": (["--plot", "p.png"], "output.plot", "p.png"),
    "overwrite": (["--overwrite"], "output.overwrite", True),
    "progress": (["--no-progress"], "extract.progress", False),
    "seed": (["--seed", "7"], "estimate.seed", 7),
    "window_size": (["--window-size", "512"], "tiling.window_size", 512),
    "coarse_size": (["--coarse-size", "512"], "input.coarse_size", 512),
    "tiles": (["--tiles", "3"], "tiling.tiles", 3),
    "tile_size": (["--tile-size", "256"], "tiling.size", 256),
    "gcps": (["--gcps", "t.csv"], "output.gcps", "t.csv"),
    "cog": (["--cog"], "output.cog", True),
    "shifts": (["--shifts", "s.tif"], "output.shifts", "s.tif"),
    "no_verify": (["--no-verify"], "estimate.verify", False),
    "allow_reflection": (["--allow-reflection"], "estimate.allow_reflection", True),
}
BASE_ARGS = {
    "register": ["ref.tif", "mov.tif", "-o", "o.tif"],
    "batch": ["-r", "ref.tif", "mov.tif", "-o", "out"],
}


def _option_cases():
    from sarreg.cli.options import OPTIONS

    return [pytest.param(o, c, id=f"{c}{o.flag}") for o in OPTIONS for c in sorted(o.commands)]


@functools.cache
def _command(command: str):
    """The click command typer builds for ``command``."""
    import typer

    from sarreg.cli import _register_commands, app

    _register_commands()
    return typer.main.get_command(app).commands[command]


@functools.cache
def _help(command: str) -> str:
    """``sarreg COMMAND --help`` as printed (wide enough that no flag is cut)."""
    import contextlib
    import io
    import os

    out, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        with contextlib.redirect_stdout(out):
            assert main([command, "--help"]) == 0
    finally:
        os.environ.pop("COLUMNS") if columns is None else os.environ.update(COLUMNS=columns)
    return out.getvalue()


def _parsed(command: str, args: list[str]) -> dict:
    """The parameters the command's function would receive for ``args`` (parsed by click)."""
    cmd = _command(command)
    with cmd.make_context(command, [*BASE_ARGS[command], *args]) as ctx:
        return dict(ctx.params)


def test_every_table_option_has_a_case():
    from sarreg.cli.options import OPTIONS

    assert {o.name for o in OPTIONS} == set(OPTION_CASES)


@pytest.mark.parametrize(("option", "command"), _option_cases())
def test_table_option_is_in_help_and_sets_its_setting(option, command):
    from sarreg.cli.options import config_from_options

    # the option's row of the help table: its flag first, then its help
    rows = [r.strip("│ *").split() for r in _help(command).splitlines()]
    (row,) = [r for r in rows if r and r[0] == option.flag]
    assert option.help.split()[0] in row
    args, key, value = OPTION_CASES[option.name]
    assert get_value(RegisterConfig(), key) != value  # the case really changes the setting
    cfg = config_from_options(command, _parsed(command, args))
    assert get_value(cfg, key) == value
    if option.default is None:  # the option not given: the config's default
        cfg = config_from_options(command, _parsed(command, []))
        assert get_value(cfg, key) == get_value(RegisterConfig(), key)


def test_progress_sets_both_progress_settings():
    from sarreg.cli.options import config_from_options

    on = config_from_options("register", _parsed("register", []))
    off = config_from_options("register", _parsed("register", ["--no-progress"]))
    assert on.progress and on.extract.progress and not off.progress and not off.extract.progress
    # batch's --progress is its progress bar over scenes, not the registrations'
    quiet = config_from_options("batch", _parsed("batch", ["--progress"]))
    assert not quiet.progress
