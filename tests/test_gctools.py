"""The garbage collector pause around imports and report building restores its state."""

import gc

import pytest

from sarreg.gctools import gc_paused


def test_gc_paused_disables_and_restores():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the outer block keeps it off
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_gc_paused_restores_after_an_error_and_keeps_a_disabled_collector_off():
    with pytest.raises(RuntimeError):
        with gc_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


def test_report_writing_leaves_the_collector_on(tmp_path):
    from sarreg.report import write_report

    write_report({"tie_points": [{"x": float(i)} for i in range(100)]}, tmp_path / "r.json")
    assert gc.isenabled()
