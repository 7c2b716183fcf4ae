"""A daemon's port chosen ahead of its start cannot be taken by a socket bound to port 0."""

from __future__ import annotations

import socket

from pyproof.actors import system
from pyproof.actors.system import SPARE_BAND, SPARE_PORTS_FROM, ephemeral_range, spare_port


def test_a_spare_port_lies_below_the_ephemeral_range_and_is_free():
    low, _ = ephemeral_range()
    for _ in range(20):
        port = spare_port()
        assert SPARE_PORTS_FROM <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: binds


def test_concurrent_test_workers_draw_from_disjoint_bands(monkeypatch):
    low, _ = ephemeral_range()
    if (low - SPARE_PORTS_FROM) // SPARE_BAND < 2:
        return  # one band only: nothing to keep apart (spare_port falls back)
    bands = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        bands[worker] = {(spare_port() - SPARE_PORTS_FROM) // SPARE_BAND for _ in range(20)}
    assert len(bands["gw0"]) == len(bands["gw1"]) == 1
    assert bands["gw0"] != bands["gw1"]


def test_a_taken_spare_port_is_never_handed_out(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setattr(system, "SPARE_BAND", 20)
    first = SPARE_PORTS_FROM
    held = []
    try:  # hold all but one port of gw0's band: that one is the only answer
        for port in range(first, first + 19):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
        free = set(range(first, first + 20)) - {s.getsockname()[1] for s in held}
        assert {spare_port(tries=2_000) for _ in range(5)} <= free
    finally:
        for s in held:
            s.close()
