"""Placement of a session's workers over hosts (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyproof.hosts.placement import Candidate, PlacementError, parse_explicit, place


def hosts(*spec: tuple[str, int, int]) -> list[Candidate]:
    return [Candidate(name=n, cores=c, used=u) for n, c, u in spec]


def test_round_robin_starts_on_the_masters_host_and_skips_full_hosts():
    cluster = hosts(("h3", 4, 0), ("m", 4, 0), ("h2", 1, 0))
    assert place(6, cluster, local="m") == {"m": 3, "h2": 1, "h3": 2}
    assert place(2, cluster, local="m") == {"m": 1, "h2": 1}


def test_least_loaded_counts_other_sessions_workers_per_core():
    cluster = hosts(("m", 4, 3), ("h2", 8, 0), ("h3", 2, 0))
    assert place(4, cluster, local="m", strategy="least-loaded") == {"h2": 3, "h3": 1}


def test_explicit_placement_names_hosts_and_counts():
    assert parse_explicit("h2:4,h3:4") == {"h2": 4, "h3": 4}
    cluster = hosts(("m", 4, 0), ("h2", 4, 0), ("h3", 4, 1))
    assert place(7, cluster, local="m", explicit={"h2": 4, "h3": 3}) == {"h2": 4, "h3": 3}
    with pytest.raises(PlacementError, match=r"^host 'h3' has room for 3 more workers "
                                             r"\(4 cores, 1 in use\), not 4$"):
        place(8, cluster, local="m", explicit={"h2": 4, "h3": 4})
    with pytest.raises(PlacementError, match=r"^host 'h9' is not alive in this cluster "
                                             r"\(alive: h2, h3, m\)"):
        place(1, cluster, local="m", explicit={"h9": 1})
    with pytest.raises(PlacementError, match=r"use a number, or host:count pairs"):
        parse_explicit("h2=4")


def test_too_many_workers_say_how_many_fit():
    with pytest.raises(PlacementError, match=r"^9 workers do not fit on the cluster's 2 alive "
                                             r"hosts: room for 7 "):
        place(9, hosts(("m", 4, 1), ("h2", 4, 0)), local="m")


@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=5),
       st.integers(0, 40), st.sampled_from(["round-robin", "least-loaded"]))
def test_every_worker_is_placed_once_within_the_caps(spec, workers, strategy):
    cluster = [Candidate(name=f"h{i}", cores=c, used=min(u, c)) for i, (c, u) in
               enumerate(spec)]
    room = sum(h.free for h in cluster)
    if workers > room:
        with pytest.raises(PlacementError):
            place(workers, cluster, local="h0", strategy=strategy)
        return
    placed = place(workers, cluster, local="h0", strategy=strategy)
    assert sum(placed.values()) == workers
    for h in cluster:
        assert placed.get(h.name, 0) <= h.free
    if strategy == "round-robin":  # as even as the caps allow: a host with two more
        for a in cluster:              # than another means that other one is full
            for b in cluster:
                if placed.get(a.name, 0) > placed.get(b.name, 0) + 1:
                    assert placed.get(b.name, 0) == b.free
