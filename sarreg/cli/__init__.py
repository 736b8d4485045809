"""The ``sarreg`` command line: a thin typer layer over the library.

Each sub-command lives in its own module of this package and registers itself on ``app`` in
``_register_commands``. Errors derived from :class:`sarreg.errors.SarregError` are printed as one
line (``sarreg: error: ...``) with the error's exit code; the traceback is shown only with
``--verbose``.
"""

from __future__ import annotations

import logging
import sys

import typer

from sarreg import __version__
from sarreg.errors import SarregError

app = typer.Typer(
    name="sarreg",
    help="Register SAR images with a Fast-R2D2 keypoint network trained for radar.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict = {"verbose": False, "signal": None}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sarreg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log progress details and show tracebacks on errors."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Register SAR images with a Fast-R2D2 keypoint network trained for radar."""
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register_commands() -> None:
    """Attach the sub-command modules (imported here, not at package import)."""
    import importlib

    for name in ("register", "models", "train", "evaluate", "batch"):
        try:
            module = importlib.import_module(f"sarreg.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"sarreg.cli.{name}":
                continue  # command not available in this build
            raise
        module.attach(app)


def _is_usage_error(err: Exception) -> bool:
    """True for click's usage errors (bad option, missing argument, ...), which show
    themselves; typer >= 0.29 raises those of its own copy of click (``typer.TyperException``)."""
    import click

    kinds = (click.exceptions.ClickException, getattr(typer, "TyperException", None))
    kinds = tuple(k for k in kinds if k is not None)
    return isinstance(err, kinds) and hasattr(err, "show") and hasattr(err, "exit_code")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that
    every clean-up path of an interrupt runs for them too (temporary files removed, a group of
    outputs complete or absent, a batch scene left not done). Exit code 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame) -> None:  # noqa: ARG001 (signal handler signature)
    """Turn the first SIGTERM/SIGHUP into :class:`Terminated`; ignore repeats while the
    clean-up runs."""
    import signal

    _state["signal"] = signum
    for sig in _TERM_SIGNALS():
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def _TERM_SIGNALS() -> list:  # noqa: N802
    import signal

    return [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]


def _install_signal_handlers() -> dict:
    """Install :func:`_on_signal` for SIGTERM and SIGHUP (main thread only); returns the old
    handlers, for :func:`_restore_signal_handlers`."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for sig in _TERM_SIGNALS():
        old[sig] = signal.getsignal(sig)
        if old[sig] is signal.SIG_IGN:  # e.g. started under nohup: keep ignoring SIGHUP
            continue
        signal.signal(sig, _on_signal)
    return old


def _restore_signal_handlers(old: dict) -> None:
    import signal

    for sig, handler in old.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _interrupt_code() -> int:
    """Exit code of an interrupt: 128 + the signal (143 SIGTERM, 129 SIGHUP, 130 Ctrl-C)."""
    signum = _state.get("signal")
    return 128 + int(signum) if signum else 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sarreg`` console script. Returns the process exit code."""
    _state["signal"] = None
    old = _install_signal_handlers()
    try:
        return _main_guarded(argv)
    except KeyboardInterrupt:  # a signal during the clean-up of another exception
        typer.echo("sarreg: interrupted", err=True)
        return _interrupt_code()
    finally:
        _restore_signal_handlers(old)


def _main_guarded(argv: list[str] | None) -> int:
    _register_commands()
    verbose = "--verbose" in (argv or sys.argv[1:]) or "-v" in (argv or sys.argv[1:])
    try:
        result = app(args=argv, standalone_mode=False)
        if result == 130:  # typer turns Ctrl-C into Exit(130), returned in non-standalone mode
            raise KeyboardInterrupt
    except SarregError as err:
        if verbose:
            logging.getLogger("sarreg").exception("error")
        typer.echo(f"sarreg: error: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        typer.echo("sarreg: interrupted", err=True)
        return _interrupt_code()
    except typer.Exit as ex:
        return ex.exit_code
    except typer.Abort:
        if _state.get("signal"):  # click turned Terminated into Abort
            typer.echo("sarreg: interrupted", err=True)
            return _interrupt_code()
        typer.echo("sarreg: aborted", err=True)
        return 1
    except Exception as err:  # click usage errors and the unexpected
        if _is_usage_error(err):
            err.show()
            return err.exit_code
        if verbose:
            raise
        typer.echo(
            f"sarreg: error: unexpected {type(err).__name__}: {err} "
            "(rerun with --verbose for the traceback and report it)",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code (:func:`exit_process`)."""
    exit_process(main())


def exit_process(code: int) -> None:
    """End the process with ``code`` once :func:`main` has returned.

    Every output is complete and closed by then, so the process ends at once: the ``atexit``
    handlers run, logging and the standard streams are flushed, and ``os._exit`` skips the
    interpreter's tear-down of the imported modules (about 0.3 s with PyTorch and GDAL
    loaded). With a non-daemon thread still running, a normal ``sys.exit`` waits for it.
    """
    import atexit
    import os
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):  # fmt: skip
        sys.exit(code)
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: BLE001 (a failed clean-up: let the interpreter finish it)
        sys.exit(code)
    os._exit(code)
