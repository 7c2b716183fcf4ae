"""A session's first query and its processes' warm-up imports (actors/warmup.py,
actors/import_guard.py), in real lite sessions: a query that imports none of the data
modules does not wait for the warm-up; one whose selector imports them while the
warm-up does gets them whole."""

from __future__ import annotations

import time

import pytest

import pyproof
from pyproof.actors.warmup import DELAY_ENV


@pytest.fixture
def slow_warmup(monkeypatch):
    def slow(seconds: float) -> None:
        monkeypatch.setenv("PYPROOF_TEST_HOOKS", "1")
        monkeypatch.setenv(DELAY_ENV, str(seconds))  # before each of the modules
    return slow


def test_a_cycles_query_right_after_connect_does_not_wait_for_the_warm_up(slow_warmup):
    slow_warmup(20.0)  # the workers' and the master's warm-up: 80 s, asleep
    with pyproof.connect("lite://?workers=2") as session:
        t0 = time.monotonic()
        result = session.process("tests.warmup_selectors:Warming", cycles=10,
                                  progress=False, timeout=60)
        took = time.monotonic() - t0
    assert result.outputs["count"] == 10
    # every worker that ran the query did so while its warm-up still slept
    assert result.outputs["warming"] == result.outputs["workers"] >= 1
    assert took < 10, f"the first cycles query took {took:.1f} s"


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_a_first_query_whose_selector_imports_awkward_during_the_warm_up_gets_it_whole(
        slow_warmup, delay):
    slow_warmup(delay)  # the query meets the warm-up at different points of its imports
    with pyproof.connect("lite://?workers=2") as session:
        result = session.process("tests.awkward_selectors:CyclesInAwkward", cycles=100,
                                 progress=False, timeout=60)
        again = session.process("tests.awkward_selectors:CyclesInAwkward", cycles=100,
                                progress=False, timeout=60)
    for each in (result, again):
        assert each.outputs["sum"] == sum(range(100))
        assert list(each.outputs["h"].values()) == [10.0] * 10
