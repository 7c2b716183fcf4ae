"""The pure decision behind data-thread heartbeats (supervision/threads.py)."""

from __future__ import annotations

from pyproof.supervision.threads import Beat, Stuck, stuck_threads

BOUND, MAX_BUSY = 15.0, 120.0


def check(*beats: Beat, now: float) -> list[Stuck]:
    return stuck_threads(beats, now, bound=BOUND, max_busy=MAX_BUSY)


def test_a_thread_silent_past_the_bound_without_cpu_is_stuck():
    assert check(Beat(name="master-plane", stamped=0.0, active=True, cpu_before=1.0,
                      cpu_now=1.0), now=15.5) == [Stuck(name="master-plane", silent=15.5)]


def test_a_thread_within_the_bound_or_idle_is_not_stuck():
    assert check(Beat(name="master-plane", stamped=0.0, active=True), now=15.0) == []
    assert check(Beat(name="merge-q", stamped=0.0, active=False), now=1000.0) == []


def test_a_thread_busy_on_the_cpu_gets_time_but_not_for_ever():
    busy = dict(name="merge-q", stamped=0.0, active=True, cpu_before=3.0, cpu_now=3.5)
    assert check(Beat(**busy), now=60.0) == []
    assert check(Beat(**busy), now=121.0) == [Stuck(name="merge-q", silent=121.0)]


def test_cpu_time_unknown_or_a_thread_that_ended_counts_as_not_busy():
    assert check(Beat(name="a", stamped=0.0, active=True, cpu_before=None, cpu_now=2.0),
                 Beat(name="b", stamped=0.0, active=True, cpu_before=2.0, cpu_now=None),
                 now=16.0) == [Stuck(name="a", silent=16.0), Stuck(name="b", silent=16.0)]
