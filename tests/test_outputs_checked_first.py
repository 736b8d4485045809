"""Every output path is checked before any work: a refused output costs no registration.

The check is observed through the order of refusals: the model given (`--model`) does not
exist, which ``sarreg register`` reports (exit 13) only when it loads the model, after the
output checks and before any extraction. An output refused first (exit 9 or 10) therefore
proves that nothing was read, extracted or matched; and extraction is watched directly too.
"""

from __future__ import annotations

import pytest

import sarreg.features
from sarreg.cli import main


@pytest.fixture()
def no_extraction(monkeypatch):
    """Fail the test if feature extraction starts."""

    def extract(*args, **kwargs):
        raise AssertionError("extraction ran although an output was refused")

    monkeypatch.setattr(sarreg.features, "extract", extract)


@pytest.fixture()
def demo(data_dir):
    return str(data_dir / "demo" / "reference.tif"), str(data_dir / "demo" / "moving.tif")


@pytest.mark.parametrize("existing", ["image", "report", "plot", "gcps"])
def test_an_existing_output_is_refused_before_any_work(
    demo, tmp_path, capsys, no_extraction, existing
):
    ref, mov = demo
    paths = {
        "image": tmp_path / "o.tif",
        "report": tmp_path / "r.json",
        "plot": tmp_path / "p.png",
        "gcps": tmp_path / "t.csv",
    }
    paths[existing].write_bytes(b"keep me")
    args = ["register", ref, mov, "-o", str(paths["image"]), "--report", str(paths["report"]),
            "--plot", str(paths["plot"]), "--gcps", str(paths["gcps"]),
            "--model", str(tmp_path / "missing.pt"), "--no-progress"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == 10, err
    assert str(paths[existing].name) in err and "--overwrite" in err
    assert paths[existing].read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths[existing].name]


@pytest.mark.parametrize("unwritable", ["image", "report", "plot", "gcps"])
def test_an_unwritable_output_is_refused_before_any_work(
    demo, tmp_path, capsys, no_extraction, unwritable
):
    ref, mov = demo
    paths = {
        "image": tmp_path / "o.tif",
        "report": tmp_path / "r.json",
        "plot": tmp_path / "p.png",
        "gcps": tmp_path / "t.csv",
    }
    paths[unwritable] = tmp_path / "no" / "dir" / paths[unwritable].name
    args = ["register", ref, mov, "-o", str(paths["image"]), "--report", str(paths["report"]),
            "--plot", str(paths["plot"]), "--gcps", str(paths["gcps"]),
            "--model", str(tmp_path / "missing.pt"), "--no-progress"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == 9, err
    assert list(tmp_path.iterdir()) == []


def test_the_missing_model_alone_is_exit_13(demo, tmp_path, capsys, no_extraction):
    """The control of the two tests above: with every output writable, the same command gets
    as far as loading the model (so exit 9/10 above really came first)."""
    ref, mov = demo
    code = main(["register", ref, mov, "-o", str(tmp_path / "o.tif"),
                 "--model", str(tmp_path / "missing.pt"), "--no-progress"])  # fmt: skip
    assert code == 13, capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_refused_before_extraction_with_the_bundled_model(
    demo, tmp_path, capsys, no_extraction
):
    ref, mov = demo
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    assert main(["register", ref, mov, "-o", str(out), "--no-progress"]) == 10
    assert out.read_bytes() == b"keep me"
