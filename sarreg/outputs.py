"""The output guard: no output may be an input, another output, or something other than a file.

Every command checks its whole group of outputs with :func:`guard_outputs` before any work:

* each output is distinct from every input and from every other output: compared by resolved
  path (symlinks followed) and, where both exist, by :func:`os.path.samefile` (hard links);
* an existing output is a regular file: a folder, a device, a FIFO or a socket is never
  replaced, with or without ``--overwrite``;
* an output that is a symbolic link points into the output's own folder; a link to elsewhere
  is refused (replacing it would surprise whoever made it).

A violation raises :class:`~sarreg.errors.ConfigError` (exit 12) naming both paths (or the
path and what it is); an output that is a folder raises
:class:`~sarreg.errors.OutputError` (exit 9) as :func:`sarreg.atomic.check_output_path` does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sarreg.errors import ConfigError, OutputError

#: a path with a role, e.g. ``("report", "out.json")``; ``None`` paths are left out
Named = tuple[str, "str | os.PathLike | None"]


@dataclass(frozen=True)
class _Item:
    """One path of the group: its role (``'output'``, ``'moving image'``...), as given, and
    resolved (absolute, symlinks followed)."""

    role: str
    given: str
    resolved: str


def _is_local(path: str) -> bool:
    """False for GDAL virtual paths (``/vsizip/...``) and URLs, which are never outputs."""
    return not (path.startswith("/vsi") or "://" in path)


def _item(role: str, path: str | os.PathLike) -> _Item:
    given = os.fspath(path)
    if not _is_local(given):
        return _Item(role, given, given)
    return _Item(role, given, os.path.realpath(os.path.expanduser(given)))


def _keys(item: _Item) -> list[tuple]:
    """Identities of a path: its resolved name and, if it exists, its (device, inode), so that
    symlinks and hard links to one file compare equal."""
    keys: list[tuple] = [("path", item.resolved)]
    if _is_local(item.given):
        try:
            st = os.stat(item.resolved)
        except OSError:
            pass
        else:
            keys.append(("inode", st.st_dev, st.st_ino))
    return keys


def _file_kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_kind(role: str, path: str | os.PathLike) -> None:
    """Raise unless ``path`` is absent or a regular file (a link only into its own folder).

    Raises:
        OutputError: ``path`` is a folder (exit 9).
        ConfigError: ``path`` is a device, pipe or socket, or a symbolic link to a file
            outside the output's folder (exit 12).
    """
    p = Path(os.path.expanduser(os.fspath(path))).absolute()
    if p.is_symlink():
        target = Path(os.path.realpath(p))
        if target.parent != Path(os.path.realpath(p.parent)):
            raise ConfigError(
                f"the {role} {p} is a symbolic link to {target}, outside its folder; sarreg "
                "does not replace it",
                "remove the link or choose another output path",
            )
    try:
        st = os.stat(p)
    except OSError:
        return  # absent (or a dangling link): written as a new file
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output path {p} is a folder", "give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            f"the {role} {p} is {_file_kind(st.st_mode)}; sarreg only writes regular files",
            "choose another output path (even with --overwrite a device is never replaced)",
        )


def guard_outputs(outputs: Iterable[Named], inputs: Iterable[Named]) -> None:
    """Check a command's group of outputs against its inputs and each other, before any work.

    Args:
        outputs: ``(role, path)`` of every file the command will write (image, report, tie
            points, plot, ...); ``None`` paths are skipped.
        inputs: ``(role, path)`` of every file it reads (images, model, lists, ...).

    Raises:
        ConfigError: an output is an input or another output (both paths named), or is not a
            regular file (see :func:`check_output_kind`).
        OutputError: an output is a folder.
    """
    outs = [_item(r, p) for r, p in outputs if p is not None and os.fspath(p) != ""]
    ins = [_item(r, p) for r, p in inputs if p is not None and os.fspath(p) != ""]
    seen_in: dict[tuple, _Item] = {}
    for src in ins:
        for key in _keys(src):
            seen_in.setdefault(key, src)
    seen_out: dict[tuple, _Item] = {}
    for out in outs:
        keys = _keys(out)
        src = next((seen_in[k] for k in keys if k in seen_in), None)
        if src is not None:
            raise ConfigError(
                f"the {out.role} {out.given} is the {src.role} {src.given}: sarreg never "
                "writes over an input",
                "choose another output path",
            )
        other = next((seen_out[k] for k in keys if k in seen_out), None)
        if other is not None:
            raise ConfigError(
                f"the {out.role} {out.given} and the {other.role} {other.given} are the same file",
                "give each output its own path"
                + (
                    " (the report defaults to the -o path with the suffix .json; set --report)"
                    if "report" in (out.role, other.role)
                    else ""
                ),
            )
        for key in keys:
            seen_out.setdefault(key, out)
        if _is_local(out.given):
            check_output_kind(out.role, out.given)


def register_guard(out_path, report_path, config, inputs: Iterable = ()) -> None:
    """:func:`guard_outputs` for one registration: the image (``-o``), its report, ``--gcps``
    and ``--plot`` against the reference, the moving image and ``--model``.

    ``config`` is a :class:`sarreg.config.RegisterConfig`; ``inputs`` ``(reference,
    moving)``."""
    names = ("reference image", "moving image")
    guard_outputs(
        [
            ("output image", out_path),
            ("report", report_path),
            ("tie-point export (--gcps)", config.output.gcps),
            ("plot (--plot)", config.output.plot),
        ],
        [*zip(names, inputs, strict=False), ("model (--model)", config.model)],
    )


#: files ``sarreg train`` writes into its ``--out`` folder
TRAIN_OUTPUTS = ("last.pt", "best.pt", "log.csv", "val.csv", "train.log", "config.yaml")


def train_guard(cfg, resume=None, init=None) -> None:
    """:func:`guard_outputs` for ``sarreg train``: ``--out`` is a folder (or absent) and its
    files are not ``--init`` or a data file. ``--resume out/last.pt`` is the run continuing
    and is allowed. ``cfg`` is a :class:`sarreg.training.config.TrainConfig`."""
    out = Path(os.path.expanduser(str(cfg.out))).absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"the training output {out} exists and is not a folder",
            "give --out a folder (created if missing)",
        )
    inputs: list[Named] = [("--init checkpoint", init)]
    for section in (cfg.data, cfg.val):
        for src in getattr(section, "sources", ()):
            path = getattr(src, "path", src)
            if path is not None and Path(str(path)).is_file():
                inputs.append(("data file", path))
    if resume is not None and Path(os.path.realpath(resume)) != Path(
        os.path.realpath(out / "last.pt")
    ):
        inputs.append(("--resume checkpoint", resume))
    guard_outputs([(f"training output {name}", out / name) for name in TRAIN_OUTPUTS], inputs)


@dataclass
class RunFolder:
    """What a training run found in its output folder, so that a run that fails before its
    first checkpoint removes the files (and the folder) it created and nothing else."""

    path: Path
    created: bool
    before: frozenset[str]

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunFolder:
        """Create ``path`` (and parents) if needed; remember what was there."""
        from sarreg.atomic import make_output_folder

        p = Path(path)
        created = not p.exists()
        make_output_folder(p, "choose a writable --out folder")
        return cls(p, created, frozenset(os.listdir(p)))

    def discard_if_untrained(self) -> None:
        """If no checkpoint was written by this run, remove the files it added (logs, config)
        and, when this run created the folder and it is empty again, the folder."""
        new = set(os.listdir(self.path)) - self.before if self.path.is_dir() else set()
        if any(name.endswith(".pt") for name in new):
            return  # a checkpoint exists: keep its logs
        for name in new:
            target = self.path / name
            try:
                if target.is_dir() and not target.is_symlink():
                    import shutil

                    shutil.rmtree(target)
                else:
                    target.unlink()
            except OSError:
                pass
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass


#: files ``sarreg evaluate run`` writes into its results folder (and results_by_<tag>.md)
EVALUATE_OUTPUTS = ("results.md", "results.csv", "pairs.json", "mma.png")


def evaluate_guard(bench, folder, methods) -> None:
    """:func:`guard_outputs` for ``sarreg evaluate run``: the results files are not the
    benchmark's index, images or displacement fields, nor a ``sarreg:PATH`` checkpoint.
    An unreadable benchmark is left to the run to report."""
    from sarreg.errors import SarregError

    inputs: list[Named] = []
    bench = Path(bench)
    if bench.is_file():
        inputs.append(("benchmark index", bench))
    for spec in methods or ():
        if str(spec).lower().startswith("sarreg:"):
            inputs.append(("checkpoint", str(spec)[len("sarreg:") :]))
    try:
        from sarreg.evaluation.bench import read_benchmark

        pairs = read_benchmark(bench)
    except SarregError:
        pairs = []
    for pair in pairs:
        for role in ("reference", "moving", "displacement"):
            path = getattr(pair, role, None)
            if path is not None:
                inputs.append((f"{role} of {pair.name}", path))
    folder = Path(folder)
    outputs = [("results file", folder / name) for name in EVALUATE_OUTPUTS]
    if folder.is_dir():
        outputs += [("results file", p) for p in sorted(folder.glob("results_by_*.md"))]
    guard_outputs(outputs, inputs)
