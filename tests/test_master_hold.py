"""A worker asking for a packet when there is none yet is held, not told to poll.

Real MasterPlane, real nng sockets; the worker's side is a bare Req0.
"""

from __future__ import annotations

import os
import threading
import time

import pynng
import pytest

from pyproof.actors import master_plane
from pyproof.actors import protocol as p
from pyproof.actors.master_plane import MasterPlane
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import decode_frame, encode_frame


def spec(tmp_path) -> QuerySpec:
    return QuerySpec(selector="m:S", cycles=1000, packetizer="basic",
                     packetizer_params={"packet_entries": 1000},
                     client_address=f"ipc://{tmp_path}/nobody.ipc")


@pytest.fixture
def plane(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    plane.worker_joined(f"worker-0#{os.getpid()}")
    plane.start_query("q1", spec(tmp_path))
    plane.start_query("q2", spec(tmp_path))  # queued behind q1
    with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000) as sock:
        yield plane, sock
    plane.close()


def next_for(query: str) -> bytes:
    return encode_frame(p.NEXT, {"worker": "worker-0", "pid": os.getpid(), "query": query,
                                 "processed": []})


def test_a_queued_querys_request_is_held_and_answered_when_its_turn_comes(plane, monkeypatch):
    monkeypatch.setattr(master_plane, "HOLD_SECONDS", 30.0)  # only the event can answer
    master, sock = plane
    answers: list[bytes] = []
    got = threading.Event()

    def ask() -> None:
        sock.send(next_for("q2"))
        answers.append(sock.recv())
        got.set()

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    assert not got.wait(0.8)  # held: no WAIT to poll with
    assert master.stop_query("q1", "aborted by the test", abort=True)
    assert got.wait(8), "the held request was not answered when q2 began"
    asker.join(1)
    frame = decode_frame(answers[0])
    assert frame.type == p.PACKET, frame
    assert frame.payload["packet"]["entry_stop"] == 1000


def test_a_held_request_is_answered_wait_at_the_bound(plane, monkeypatch):
    monkeypatch.setattr(master_plane, "HOLD_SECONDS", 0.5)
    _, sock = plane
    t0 = time.monotonic()
    sock.send(next_for("q2"))
    frame = decode_frame(_recv_within(sock, 5))
    waited = time.monotonic() - t0
    assert frame.type == p.WAIT and frame.payload["held"] >= 0.5
    assert 0.5 <= waited < 3.0


def test_a_request_held_when_the_plane_closes_is_dropped_cleanly(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    plane.start_query("q1", spec(tmp_path))
    plane.start_query("q2", spec(tmp_path))
    with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000) as sock:
        sock.send(next_for("q2"))
        time.sleep(0.3)
        plane.close()
        assert not plane._held


def _recv_within(sock: pynng.Req0, seconds: float) -> bytes:
    sock.recv_timeout = int(seconds * 1000)
    return sock.recv()


def test_a_held_request_of_a_worker_declared_lost_is_refused_not_given_a_packet(plane):
    master, sock = plane
    sock.send(next_for("q2"))
    time.sleep(0.5)  # held
    master.worker_lost(f"worker-0#{os.getpid()}")
    frame = decode_frame(_recv_within(sock, 5))
    assert frame.type == p.ABORT and "declared lost" in frame.payload["reason"]
    assert master.stop_query("q1", "aborted by the test", abort=True)
    deadline = time.monotonic() + 5
    while master.query.query_id != "q2" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert master.query.query_id == "q2"
    time.sleep(0.5)  # q2 ran its held requests: none of the dead worker's
    assert f"worker-0#{os.getpid()}" not in master.query.core.workers


def _unit_spec(tmp_path) -> QuerySpec:
    return QuerySpec(selector="m:S", cycles=1, client_address=f"ipc://{tmp_path}/nobody.ipc")


def test_a_worker_asking_ahead_while_holding_the_last_packet_is_answered_at_once(
        tmp_path, monkeypatch):
    # the worker asks for its next packet before processing the one it has (worker_loop);
    # held, that request kept the query's last outputs (and the result) for HOLD_SECONDS
    monkeypatch.setattr(master_plane, "HOLD_SECONDS", 30.0)
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    try:
        plane.worker_joined(f"worker-0#{os.getpid()}")
        plane.start_query("q1", _unit_spec(tmp_path))
        with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000) as sock:
            sock.send(next_for("q1"))
            assert decode_frame(_recv_within(sock, 8)).type == p.PACKET
            sock.send(next_for("q1"))
            frame = decode_frame(_recv_within(sock, 8))
            assert frame.type == p.WAIT and frame.payload == {"flush": True}
    finally:
        plane.close()


def test_a_request_held_during_the_look_up_is_answered_when_the_look_up_ends(
        tmp_path, monkeypatch):
    # the look-up thread feeds the run: the plane must answer at once, not at its next poll
    monkeypatch.setattr(master_plane, "HOLD_SECONDS", 30.0)
    monkeypatch.setattr(master_plane, "IDLE_POLL_MS", 60_000)
    monkeypatch.setattr(master_plane, "BUSY_POLL_MS", 60_000)
    gate = threading.Event()
    real_lookup = master_plane.QueryRun._lookup

    def slow_lookup(self):
        gate.wait(10)
        real_lookup(self)

    monkeypatch.setattr(master_plane.QueryRun, "_lookup", slow_lookup)
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    try:
        plane.worker_joined(f"worker-0#{os.getpid()}")
        # a per-file task: looked up on a thread (a cycles query's is done at once)
        plane.start_query("q1", QuerySpec(selector="m:S", files=((str(tmp_path / "a.root"),
                                                                  None),),
                                          client_address=f"ipc://{tmp_path}/nobody.ipc"))
        with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000) as sock:
            sock.send(next_for("q1"))
            deadline = time.monotonic() + 5
            while not plane._held and time.monotonic() < deadline:
                time.sleep(0.01)
            assert plane._held, "the request was not held during the look-up"
            gate.set()
            assert decode_frame(_recv_within(sock, 8)).type == p.PACKET
    finally:
        gate.set()
        plane.close()


def test_a_workers_last_outputs_carry_its_next_request_answered_done_after_the_merge(
        tmp_path, monkeypatch):
    # one round trip at a query's end, not two: the outputs' ACK rides on the answer to
    # the next request, which is held until the merge is done and the query finishing
    monkeypatch.setattr(master_plane, "HOLD_SECONDS", 30.0)  # only the event can answer
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    me = {"worker": "worker-0", "pid": os.getpid(), "query": "q1"}
    try:
        plane.worker_joined(f"worker-0#{os.getpid()}")
        plane.start_query("q1", _unit_spec(tmp_path))
        with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000) as sock:
            sock.send(next_for("q1"))
            packet = decode_frame(_recv_within(sock, 8)).payload["packet"]
            report = {"packet": packet["packet_id"], "entries": 1, "seconds": 0.001}
            outputs = encode_frame(p.OUTPUTS, {**me, "packets": [packet["packet_id"]],
                                               "processed": [report], "outputs": {"n": 1},
                                               "next": True})
            sock.send(outputs)
            frame = decode_frame(_recv_within(sock, 8))
            assert frame.type == p.DONE and frame.payload == {"accepted": True}
            assert plane.query.core.delivered == 1
            sock.send(outputs)  # sent twice (a resend): never merged twice
            frame = decode_frame(_recv_within(sock, 8))
            assert frame.type == p.DONE
        deadline = time.monotonic() + 5
        while plane.query.core.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert plane.query.state == "finished" and plane.query.outputs == {"n": 1}
    finally:
        plane.close()


def test_a_query_begins_without_the_planes_lock_so_the_last_ones_merge_thread_can_end(
        tmp_path, monkeypatch):
    # the last query's merge thread may still be answering held requests (under the
    # plane's lock) when the next query begins and joins it: with the lock held there,
    # the actor thread hung until the watchdog killed the master (seen under load)
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    could_lock: list[bool] = []
    real_close = master_plane.QueryRun.close

    def close(run):
        def other_thread():  # as the merge thread in `_wake`
            got = plane._lock.acquire(timeout=1.0)
            could_lock.append(got)
            if got:
                plane._lock.release()
        t = threading.Thread(target=other_thread)
        t.start()
        t.join(5)
        real_close(run)

    monkeypatch.setattr(master_plane.QueryRun, "close", close)
    try:
        plane.start_query("q1", _unit_spec(tmp_path))
        assert plane.stop_query("q1", "aborted by the test", abort=True)
        plane.start_query("q2", _unit_spec(tmp_path))
        assert could_lock == [True]
    finally:
        plane.close()


def test_a_plane_made_not_to_serve_yet_queues_requests_until_it_serves(tmp_path):
    # the master starts serving once its Started is sent (threads started before held up
    # that send: actors/master.py); a worker's request made meanwhile waits in the socket
    address = f"ipc://{tmp_path}/master.ipc"
    unserved = MasterPlane(session_id="s0", address=address, serve=False)
    unserved.close()  # never served: closes all the same
    plane = MasterPlane(session_id="s1", address=address, serve=False)
    plane.worker_joined(f"worker-0#{os.getpid()}")
    plane.start_query("q1", spec(tmp_path))
    try:
        with pynng.Req0(dial=address, recv_timeout=300, send_timeout=5000) as sock:
            sock.send(next_for("q1"))
            with pytest.raises(pynng.Timeout):
                sock.recv()  # nothing serves it yet
            sock.recv_timeout = 10_000
            plane.serve()
            plane.serve()  # (once)
            sock.send(next_for("q1"))  # (Req0: the request again, as a worker's resend)
            frame = decode_frame(sock.recv())  # answered now (a packet, or wait: a look-up)
        assert frame.type in (p.PACKET, p.WAIT), frame
        assert [t.name for t in threading.enumerate()].count("master-plane") == 1
    finally:
        plane.close()
