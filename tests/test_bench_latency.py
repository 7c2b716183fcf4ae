"""bench.latency's phase breakdown from log events (pure: no cluster)."""

from __future__ import annotations

import pytest

from pyproof.bench.latency import phases


def test_phases_are_measured_between_the_log_events_of_one_query():
    events = [(10.002, "master", "query_accepted"), (10.003, "master", "query_prepared"),
              (10.004, "worker-1", "query_started"), (10.0035, "worker-0", "query_started"),
              (10.006, "worker-0", "outputs_sent"), (10.008, "worker-1", "outputs_sent"),
              (10.009, "master", "query_finished")]
    got = phases(10.0, 10.010, events)
    assert got == pytest.approx({"submit": 0.002, "look-up": 0.001, "begin": 0.0015,
                                 "process": 0.005, "finish": 0.001, "back": 0.001})


def test_a_phase_whose_events_are_missing_is_left_out():
    assert phases(1.0, 2.0, [(1.5, "master", "query_finished")]) == {"back": 0.5}
