"""Shared test fixtures: paths to the bundled real SAR samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def _worker_threads() -> int | None:
    """CPU threads per pytest-xdist worker (cores shared among the workers), None outside
    xdist. More threads than cores make PyTorch's and OpenCV's pools spin: with two workers of
    two threads on two cores the slowest tests take 2-4x the CPU time."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return None
    return max(1, (os.cpu_count() or 1) // int(workers))


if _worker_threads() is not None:  # before PyTorch is imported; subprocesses inherit it
    os.environ.setdefault("OMP_NUM_THREADS", str(_worker_threads()))


@pytest.fixture(scope="session", autouse=True)
def _threads_per_worker():
    """Each xdist worker's PyTorch and OpenCV use its share of the cores."""
    threads = _worker_threads()
    if threads is not None:
        from sarreg.model.runtime import set_threads

        set_threads(threads)
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's bundled sample data folder (see data/README.md)."""
    return DATA
