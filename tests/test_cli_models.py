"""``sarreg models list | info | convert`` through the CLI entry point."""

from __future__ import annotations

import hashlib

import pytest
import torch
from test_checkpoint import _fake_naver  # the naver-layout checkpoint builder

from sarreg.cli import main
from sarreg.model import build_model, load_checkpoint, save_checkpoint
from sarreg.model.checkpoint import MODEL_ENV


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _naver_file(tmp_path, name="faster2d2_WASF_N16", seed=0):
    path = tmp_path / f"{name}.pt"
    torch.save(_fake_naver(name, seed=seed), path)
    return path


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sarreg: error: ")
    return lines[0]


def test_convert_naver_then_info(tmp_path, capsys):
    src = _naver_file(tmp_path)
    dst = tmp_path / "out" / "grey.pt"
    assert main(["models", "convert", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {dst}" in out and "fast_r2d2" in out
    assert _sha(dst) in out
    ours = load_checkpoint(dst)
    assert ours.source_format == "sarreg"
    assert ours.config["in_channels"] == 1 and ours.config["input_offset"] is True
    assert ours.meta["converted_from"] == src.name
    assert ours.meta["converted_from_sha256"] == _sha(src)
    assert "CC BY-NC-SA" in ours.meta["license"]
    # the converted file computes what the naver file does (converted on load)
    img = torch.rand(1, 1, 24, 30, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = ours.net(img)
        b = load_checkpoint(src).net(img)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)

    assert main(["models", "info", str(dst)]) == 0
    info = capsys.readouterr().out
    assert f"checkpoint: {dst}" in info
    assert f"sha256: {_sha(dst)}" in info
    assert "format: sarreg" in info
    assert "arch: fast_r2d2" in info
    assert "mchan=4" in info and "input_offset=True" in info
    assert f"({dst.stat().st_size} bytes)" in info
    assert "license: CC BY-NC-SA" in info
    assert f"converted_from: {src.name}" in info


def test_info_reads_naver_files(tmp_path, capsys):
    src = _naver_file(tmp_path, "r2d2_WASF_N16")
    assert main(["models", "info", str(src)]) == 0
    info = capsys.readouterr().out
    assert "format: naver" in info and "arch: r2d2" in info
    assert f"sha256: {_sha(src)}" in info


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    src = _naver_file(tmp_path)
    dst = tmp_path / "taken.pt"
    dst.write_bytes(b"keep me")
    assert main(["models", "convert", str(src), str(dst)]) == 10
    line = _one_line_error(capsys.readouterr().err)
    assert "exists" in line and "--overwrite" in line
    assert dst.read_bytes() == b"keep me"
    assert main(["models", "convert", str(src), str(dst), "--overwrite"]) == 0
    assert load_checkpoint(dst).arch == "fast_r2d2"


@pytest.mark.parametrize("command", ["convert", "info"])
def test_missing_or_invalid_input_is_a_checkpoint_error(tmp_path, capsys, command):
    missing = tmp_path / "nope.pt"
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    for src in (missing, bogus):
        args = ["models", command, str(src)]
        if command == "convert":
            args.append(str(tmp_path / "out.pt"))
        assert main(args) == 13
        line = _one_line_error(capsys.readouterr().err)
        assert str(src) in line
    assert not (tmp_path / "out.pt").exists()


def test_convert_sarreg_checkpoint_drops_training_state(tmp_path, capsys):
    torch.manual_seed(0)
    net = build_model("fast_r2d2", mchan=2)
    src = save_checkpoint(
        tmp_path / "last.pt",
        net,
        meta={"name": "mine", "step": 1200},
        preprocess={"log_scale": True},
        training={"step": 1200, "optimizer_state": torch.zeros(3)},
    )
    dst = tmp_path / "slim.pt"
    assert main(["models", "convert", str(src), str(dst)]) == 0
    slim = load_checkpoint(dst)
    assert slim.training is None
    assert slim.meta["step"] == 1200 and slim.meta["converted_from"] == "last.pt"
    assert slim.preprocess == {"log_scale": True}
    for key, value in net.state_dict().items():
        assert torch.equal(slim.net.state_dict()[key], value), key
    # --channels is for naver files only
    assert main(["models", "convert", str(src), str(dst), "--overwrite", "--channels", "3"]) == 12
    _one_line_error(capsys.readouterr().err)


def test_convert_naver_to_rgb(tmp_path, capsys):
    src = _naver_file(tmp_path, seed=3)
    dst = tmp_path / "rgb.pt"
    assert main(["models", "convert", str(src), str(dst), "--channels", "3"]) == 0
    assert load_checkpoint(dst).config["in_channels"] == 3


def test_list_without_a_bundled_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "none_yet.pt"))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "none_yet.pt" in out and "not installed" in out


def test_list_shows_default_and_neighbours(tmp_path, monkeypatch, capsys):
    default = tmp_path / "default.pt"
    assert main(["models", "convert", str(_naver_file(tmp_path)), str(default)]) == 0
    (tmp_path / "broken.pt").write_text("x")
    capsys.readouterr()
    monkeypatch.setenv(MODEL_ENV, str(default))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"default model ($SARREG_MODEL): {default}" in out
    assert f"sha256: {_sha(default)}" in out and "arch: fast_r2d2" in out
    assert "faster2d2_WASF_N16.pt: " in out  # the naver file next to it
    assert "broken.pt: unreadable" in out


@pytest.mark.parametrize(
    "argv, expected",
    [(["register", "--bogus"], "No such option"), (["models", "info"], "Usage:")],
)
def test_usage_errors_are_shown_as_usage_errors(capsys, argv, expected):
    """A misspelt option or a missing argument is a usage error (exit 2, click's message),
    not an 'unexpected' error, whichever copy of click typer raises it from."""
    from sarreg.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert expected in out + err and "unexpected" not in err
