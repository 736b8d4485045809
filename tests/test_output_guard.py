"""The output guard (sarreg.outputs) called directly on real files: every refusal names the
paths involved and carries its documented exit code, and nothing on disk is changed."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest

from sarreg.config import RegisterConfig
from sarreg.errors import ConfigError, OutputError
from sarreg.outputs import (
    TRAIN_OUTPUTS,
    RunFolder,
    check_output_kind,
    evaluate_guard,
    guard_outputs,
    register_guard,
    train_guard,
)
from sarreg.training.config import TrainConfig
from sarreg.training.data import SourceConfig


@pytest.fixture
def files(tmp_path):
    """Two existing inputs ``ref.tif``, ``mov.tif`` (8 bytes each) in ``tmp_path``."""
    for name in ("ref.tif", "mov.tif"):
        (tmp_path / name).write_bytes(b"original")
    return tmp_path


def _unchanged(folder, names=("ref.tif", "mov.tif")):
    return all((folder / n).read_bytes() == b"original" for n in names)


def test_distinct_new_outputs_pass(files):
    guard_outputs(
        [("output image", files / "out.tif"), ("report", files / "out.json"), ("plot", None)],
        [("reference image", files / "ref.tif"), ("moving image", files / "mov.tif")],
    )


def test_an_output_that_is_an_input_is_refused_naming_both(files):
    with pytest.raises(ConfigError, match=r"the report .*mov.tif is the moving image") as e:
        guard_outputs(
            [("output image", files / "out.tif"), ("report", files / "mov.tif")],
            [("reference image", files / "ref.tif"), ("moving image", files / "mov.tif")],
        )
    assert e.value.exit_code == 12
    assert "never writes over an input" in e.value.message
    assert _unchanged(files)


def test_an_output_reached_through_a_symlink_or_hard_link_is_the_input(files):
    (files / "sub").mkdir()
    os.symlink(files / "ref.tif", files / "sub" / "alias.tif")
    os.link(files / "mov.tif", files / "hard.tif")
    with pytest.raises(ConfigError, match="is the reference image"):
        guard_outputs([("output image", files / "sub" / "alias.tif")],
                      [("reference image", files / "ref.tif")])  # fmt: skip
    with pytest.raises(ConfigError, match="is the moving image"):
        guard_outputs([("output image", files / "hard.tif")],
                      [("moving image", files / "mov.tif")])  # fmt: skip
    # a relative spelling of the same path, from another working folder
    with pytest.raises(ConfigError, match="is the moving image"):
        cwd = os.getcwd()
        os.chdir(files / "sub")
        try:
            guard_outputs([("output image", "../mov.tif")], [("moving image", files / "mov.tif")])
        finally:
            os.chdir(cwd)
    assert _unchanged(files)


def test_two_outputs_on_one_path_are_refused_with_the_report_hint(files):
    with pytest.raises(ConfigError, match="are the same file") as e:
        guard_outputs([("output image", files / "a.tif"), ("report", files / "a.tif")], [])
    assert "--report" in e.value.hint
    with pytest.raises(ConfigError, match="are the same file") as e:
        guard_outputs([("output image", files / "a.tif"), ("plot", files / "a.tif")], [])
    assert "--report" not in e.value.hint
    # two existing outputs hard-linked together are one file too
    (files / "x.png").write_bytes(b"x")
    os.link(files / "x.png", files / "y.png")
    with pytest.raises(ConfigError, match="are the same file"):
        guard_outputs([("plot", files / "x.png"), ("tie points", files / "y.png")], [])


def test_empty_and_none_paths_are_left_out(files):
    guard_outputs([("plot", None), ("report", ""), ("image", files / "o.tif")],
                  [("model", None), ("list", "")])  # fmt: skip


def test_gdal_virtual_inputs_are_never_outputs(files):
    guard_outputs([("output image", files / "o.tif")], [("moving image", "/vsimem/mov.tif")])
    guard_outputs([("output image", files / "o.tif")],
                  [("reference image", "https://example.org/ref.tif")])  # fmt: skip


def test_an_output_folder_is_exit_9_and_a_device_or_socket_exit_12(files):
    (files / "dir.tif").mkdir()
    with pytest.raises(OutputError, match="is a folder") as e:
        guard_outputs([("output image", files / "dir.tif")], [])
    assert e.value.exit_code == 9
    with pytest.raises(ConfigError, match="is a character device") as e:
        check_output_kind("report", "/dev/null")
    assert "never replaced" in e.value.hint
    os.mkfifo(files / "pipe.json")
    with pytest.raises(ConfigError, match="is a named pipe"):
        guard_outputs([("report", files / "pipe.json")], [])
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(files / "s.json"))
        with pytest.raises(ConfigError, match="is a socket"):
            check_output_kind("report", files / "s.json")
    finally:
        sock.close()


def test_a_symlink_out_of_the_output_folder_is_refused_inside_it_allowed(files, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "target.tif"
    elsewhere.write_bytes(b"theirs")
    os.symlink(elsewhere, files / "out.tif")
    with pytest.raises(ConfigError, match="symbolic link to .*target.tif, outside its folder"):
        guard_outputs([("output image", files / "out.tif")], [])
    assert elsewhere.read_bytes() == b"theirs"
    (files / "mine.tif").write_bytes(b"old output")
    os.symlink(files / "mine.tif", files / "link.tif")
    guard_outputs([("output image", files / "link.tif")], [])
    os.symlink(files / "missing.tif", files / "dangling.tif")  # dangling, into its folder
    check_output_kind("output image", files / "dangling.tif")


def test_register_guard_checks_gcps_plot_and_model(files):
    cfg = RegisterConfig()
    ins = (files / "ref.tif", files / "mov.tif")
    register_guard(files / "o.tif", files / "o.json", cfg, ins)
    cfg_gcps = dataclasses.replace(
        cfg, output=dataclasses.replace(cfg.output, gcps=files / "ref.tif")
    )
    with pytest.raises(ConfigError, match=r"tie-point export \(--gcps\) .* is the reference image"):
        register_guard(files / "o.tif", files / "o.json", cfg_gcps, ins)
    cfg_plot = dataclasses.replace(
        cfg, output=dataclasses.replace(cfg.output, plot=files / "o.json")
    )
    with pytest.raises(ConfigError, match=r"plot \(--plot\) .* and the report .* same file"):
        register_guard(files / "o.tif", files / "o.json", cfg_plot, ins)
    (files / "m.pt").write_bytes(b"model")
    cfg_model = dataclasses.replace(cfg, model=str(files / "m.pt"))
    with pytest.raises(ConfigError, match=r"is the model \(--model\)"):
        register_guard(files / "m.pt", files / "o.json", cfg_model, ins)
    with pytest.raises(ConfigError, match="is the moving image"):
        register_guard(files / "mov.tif", None, cfg, ins)


def test_train_guard(tmp_path):
    data = tmp_path / "scene.tif"
    data.write_bytes(b"data")
    out = tmp_path / "run"
    cfg = TrainConfig(out=str(out))
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, sources=(SourceConfig(path=str(data)),))
    )
    train_guard(cfg)
    out.mkdir()
    train_guard(cfg, resume=out / "last.pt")  # continuing the run in place
    other = tmp_path / "other.pt"
    other.write_bytes(b"ckpt")
    train_guard(cfg, resume=other, init=None)
    os.symlink(data, out / "log.csv")  # a training output that is the data file
    with pytest.raises(ConfigError, match="training output log.csv .* is the data file"):
        train_guard(cfg)
    (out / "log.csv").unlink()
    os.link(other, out / "best.pt")
    with pytest.raises(ConfigError, match="is the --init checkpoint"):
        train_guard(cfg, init=other)
    with pytest.raises(ConfigError, match="is the --resume checkpoint"):
        train_guard(cfg, resume=other)
    (out / "best.pt").unlink()
    a_file = tmp_path / "run.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder") as e:
        train_guard(dataclasses.replace(cfg, out=str(a_file)))
    assert e.value.exit_code == 9
    assert set(TRAIN_OUTPUTS) >= {"last.pt", "best.pt", "log.csv"}


def test_evaluate_guard_protects_the_index_and_checkpoints(tmp_path):
    index = tmp_path / "bench.json"
    index.write_text("not a benchmark")  # unreadable: left to the run to report
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    evaluate_guard(index, tmp_path / "results", ["sarreg:" + str(ckpt)])
    os.symlink(index, tmp_path / "results.md")
    with pytest.raises(ConfigError, match="results file .*results.md is the benchmark index"):
        evaluate_guard(index, tmp_path, [])
    (tmp_path / "results.md").unlink()
    (tmp_path / "res").mkdir()
    os.link(ckpt, tmp_path / "res" / "results_by_site.md")
    with pytest.raises(ConfigError, match="is the checkpoint"):
        evaluate_guard(index, tmp_path / "res", ["SARREG:" + str(ckpt)])


def test_run_folder_removes_only_what_an_untrained_run_added(tmp_path):
    new = tmp_path / "fresh"
    run = RunFolder.open(new)
    (new / "log.csv").write_text("step\n")
    (new / "sub").mkdir()
    run.discard_if_untrained()
    assert not new.exists()

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    run = RunFolder.open(kept)
    (kept / "log.csv").write_text("step\n")
    run.discard_if_untrained()
    assert sorted(os.listdir(kept)) == ["notes.txt"]

    run = RunFolder.open(kept)
    (kept / "log.csv").write_text("step\n")
    (kept / "last.pt").write_bytes(b"ckpt")
    run.discard_if_untrained()
    assert sorted(os.listdir(kept)) == ["last.pt", "log.csv", "notes.txt"]


def test_a_symlink_into_a_subfolder_is_outside_the_output_folder(files):
    (files / "zzz").mkdir()
    (files / "zzz" / "kept.tif").write_bytes(b"theirs")
    os.symlink(files / "zzz" / "kept.tif", files / "out.tif")
    with pytest.raises(ConfigError, match="outside its folder"):
        check_output_kind("output image", files / "out.tif")
    assert (files / "zzz" / "kept.tif").read_bytes() == b"theirs"
