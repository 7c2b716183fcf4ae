"""The master's socket to a client (callback mode) is dialled once and reused by its queries.

Real MasterPlane, real nng sockets; the client is a bare Pull0 listening as
`Session` does. A trivial query's latency was mostly a socket made, dialled
and connected per query (and closed after it).
"""

from __future__ import annotations

import os

import pynng
import pytest

from pyproof.actors import master_plane, master_query
from pyproof.actors import protocol as p
from pyproof.actors.master_plane import MasterPlane
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import decode_frame


def cycles(address: str) -> QuerySpec:
    return QuerySpec(selector="m:S", cycles=1000, client_address=address)


@pytest.fixture
def plane(tmp_path, monkeypatch):
    # a final frame to a client that is not listening waits this long: not the point here
    monkeypatch.setattr(master_query, "FINAL_FRAME_GRACE", 0.05)
    plane = MasterPlane(session_id="s1", address=f"ipc://{tmp_path}/master.ipc")
    plane.worker_joined(f"worker-0#{os.getpid()}")
    yield plane
    plane.close()


def test_queries_of_one_client_share_one_socket_and_their_frames_arrive(plane, tmp_path):
    address = f"ipc://{tmp_path}/client.ipc"
    with pynng.Pull0(listen=address, recv_timeout=10_000) as client:
        plane.start_query("q1", cycles(address))
        plane.start_query("q2", cycles(address))  # queued behind q1
        first = plane.query
        assert first is not None
        assert plane.stop_query("q1", "aborted by the test", abort=True)
        assert plane.stop_query("q2", "aborted by the test", abort=True)
        got = {decode_frame(client.recv()).payload["query"] for _ in range(2)}
        assert got == {"q1", "q2"}
        plane.start_query("q3", cycles(address))  # after both ended (and q1 was closed)
        assert plane.query is not None and plane.query.query_id == "q3"
        assert plane.query.client is first.client
        assert list(plane.callbacks) == [address]
        assert plane.stop_query("q3", "aborted by the test", abort=True)
        frame = decode_frame(client.recv())
        assert (frame.type, frame.payload["query"]) == (p.ERROR, "q3")


def test_sockets_to_clients_gone_elsewhere_are_closed_beyond_the_bound(plane, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(master_plane, "KEEP_CALLBACKS", 2)
    addresses = [f"ipc://{tmp_path}/client-{i}.ipc" for i in range(4)]
    plane.start_query("q0", cycles(addresses[0]))  # runs on: its socket must stay
    for i, address in enumerate(addresses[1:], 1):
        plane.start_query(f"q{i}", cycles(address))
        assert plane.stop_query(f"q{i}", "aborted by the test", abort=True)  # queued: ends
    assert len(plane.callbacks) == 2
    assert addresses[0] in plane.callbacks and addresses[3] in plane.callbacks
    sockets = list(plane.callbacks.values())
    plane.close()
    assert plane.callbacks == {}
    for closed in sockets:
        with pytest.raises(pynng.Closed):
            closed.send(b"x")
