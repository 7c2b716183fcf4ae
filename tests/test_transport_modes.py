"""Data connections in both modes, sealed; a session detached and re-attached."""

from __future__ import annotations

import pytest

import pyproof
from tests.conftest import data_file
from tests.daemon_helpers import Daemon

ZMUMU = None


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def zmumu(session):
    return session.process("tests.sample_selectors:ZmumuMass",
                           dataset=data_file("uproot-Zmumu.root") + ":events", progress=False)


@pytest.mark.parametrize("connection", ["callback", "dial"])
def test_both_connection_modes_give_the_exact_result(daemon, connection):
    with pyproof.connect(f"{daemon.url}?workers=2&connection={connection}") as session:
        assert (session.data_address == "") == (connection == "dial")
        assert zmumu(session).outputs["n"] == 2304


def test_client_dials_lite_cluster():
    with pyproof.connect("lite://?workers=1", connection="dial") as session:
        assert zmumu(session).stats.entries == 2304


def test_a_detached_session_keeps_running_and_keeps_its_results(daemon):
    session = pyproof.connect(f"{daemon.url}?workers=1")
    first = zmumu(session)
    session_id = session.detach()
    with pyproof.connect(daemon.url, session=session_id) as again:
        assert again.id == session_id
        kept = again.result(first.query)
        assert kept.outputs["mass"] == first.outputs["mass"]
        assert zmumu(again).outputs["n"] == 2304


def test_forged_data_frames_are_dropped_and_the_query_completes(daemon):
    import threading

    import pynng

    from pyproof.transport.frames import encode_frame

    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        stop = threading.Event()

        def forge():
            with pynng.Push0() as push:
                push.dial(session.data_address, block=True)
                while not stop.is_set():
                    push.send(encode_frame("result", {"query": "x", "outputs": {}}))
                    push.send(b"\x00" * 40)
                    stop.wait(0.01)

        thread = threading.Thread(target=forge, daemon=True)
        thread.start()
        try:
            assert zmumu(session).outputs["n"] == 2304
        finally:
            stop.set()
            thread.join(5)
        assert session.rejected_frames > 0
