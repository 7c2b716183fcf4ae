"""Workers hear of a new query on the data plane: a held WATCH, answered RUN at once.

Real MasterPlane, real nng sockets; each worker's side is a bare Req0 (as in
test_master_hold.py). The lite tests at the end run real sessions.
"""

from __future__ import annotations

import os
import signal
import time

import pynng
import pytest

import pyproof
from pyproof.actors import protocol as p
from pyproof.actors.master_plane import MasterPlane
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import decode_frame, encode_frame

ME = f"worker-0#{os.getpid()}"


def spec(tmp_path, cycles: int = 1000) -> QuerySpec:
    return QuerySpec(selector="m:S", cycles=cycles, packetizer="basic",
                     packetizer_params={"packet_entries": 1000},
                     client_address=f"ipc://{tmp_path}/nobody.ipc")


def watch(*, fresh: bool = False, worker: str = "worker-0") -> bytes:
    return encode_frame(p.WATCH, {"worker": worker, "pid": os.getpid(), "fresh": fresh})


def recv_within(sock: pynng.Req0, seconds: float):
    sock.recv_timeout = int(seconds * 1000)
    return decode_frame(sock.recv())


def held(master: MasterPlane, worker: str = ME, within: float = 5.0) -> bool:
    """True once the plane holds `worker`'s watch (a receive that timed out would cancel
    the request on our side)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with master._lock:
            if worker in master._watches:
                return True
        time.sleep(0.01)
    return False


@pytest.fixture
def plane(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    plane.worker_joined(ME)
    with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000,
                    resend_time=-1) as sock:
        yield plane, sock
    plane.close()


def test_a_watching_worker_is_told_of_a_new_query_at_once_with_its_whole_spec(plane, tmp_path):
    master, sock = plane
    sock.send(watch(fresh=True))
    assert held(master), "a watch with no query to tell of must be held"
    full = spec(tmp_path).with_output_dir(str(tmp_path / "out")).with_packages(
        [{"name": "pkg", "digest": "abc"}])
    t0 = time.monotonic()
    assert master.start_query("q1", full) == {ME}  # told before its look-up starts
    frame = recv_within(sock, 5)
    assert time.monotonic() - t0 < 2.0
    assert frame.type == p.RUN
    [query] = frame.payload["queries"]
    assert query["query"] == "q1"
    got = QuerySpec.from_wire(query["spec"]).with_output_dir(query["output_dir"]) \
        .with_packages(query["packages"])
    assert got == full  # also the fields only the daemon sets (RunQuery carried them)
    assert master.statistics()["watchers"] == [ME]


def test_a_watch_gets_every_running_or_queued_query_it_was_not_told_of_in_order(plane, tmp_path):
    master, sock = plane
    master.start_query("q1", spec(tmp_path))
    master.start_query("q2", spec(tmp_path))  # queued behind q1
    sock.send(watch(fresh=True))
    frame = recv_within(sock, 5)
    assert frame.type == p.RUN
    assert [q["query"] for q in frame.payload["queries"]] == ["q1", "q2"]
    sock.send(watch())
    assert held(master), "a worker told of every query must not be told again"
    # a fresh watch (a new socket: an answer may have been lost) is told of every one again
    with pynng.Req0(dial=master.address, recv_timeout=5000, resend_time=-1) as again:
        again.send(watch(fresh=True))
        assert [q["query"] for q in recv_within(again, 5).payload["queries"]] == ["q1", "q2"]


def test_a_watcher_between_two_watches_is_told_with_its_next_one(plane, tmp_path):
    # its held watch was just answered: the new query goes with the answer to its next one
    master, sock = plane
    master.start_query("q1", spec(tmp_path))
    sock.send(watch(fresh=True))
    assert [q["query"] for q in recv_within(sock, 5).payload["queries"]] == ["q1"]
    assert master.start_query("q2", spec(tmp_path)) == {ME}  # a watcher: no RunQuery
    sock.send(watch())
    frame = recv_within(sock, 5)
    assert frame.type == p.RUN
    assert [q["query"] for q in frame.payload["queries"]] == ["q1", "q2"]  # in order


def test_a_worker_that_does_not_watch_is_left_to_the_actors_run_query(plane, tmp_path):
    master, _ = plane
    master.worker_joined(f"worker-1#{os.getpid()}")
    assert master.start_query("q1", spec(tmp_path)) == set()  # every one by RunQuery
    assert master.announce("q1") == set()
    assert master.announce("no-such-query") == set()


def test_a_held_watch_is_answered_wait_at_its_bound(plane, monkeypatch):
    monkeypatch.setattr(p, "WATCH_HOLD_SECONDS", 0.3)
    _, sock = plane
    t0 = time.monotonic()
    sock.send(watch(fresh=True))
    frame = recv_within(sock, 5)
    assert frame.type == p.WAIT and frame.payload["held"] == 0.3
    assert 0.3 <= time.monotonic() - t0 < 3.0


def test_the_watch_of_a_worker_declared_lost_is_refused_and_never_told(plane, tmp_path):
    master, sock = plane
    sock.send(watch(fresh=True))
    assert held(master)
    master.worker_lost(ME)
    frame = recv_within(sock, 5)
    assert frame.type == p.ABORT and "declared lost" in frame.payload["reason"]
    assert master.start_query("q1", spec(tmp_path)) == set()
    sock.send(watch(fresh=True))
    assert recv_within(sock, 5).type == p.ABORT


def test_a_leaving_workers_watch_is_refused_and_it_is_told_of_no_new_query(plane, tmp_path):
    # being removed, it drains its running query; a new one must not count on it
    master, sock = plane
    sock.send(watch(fresh=True))
    assert held(master)
    master.worker_leaving(ME)
    frame = recv_within(sock, 5)
    assert frame.type == p.ABORT and frame.payload["reason"] == f"{ME} is leaving"
    assert master.start_query("q1", spec(tmp_path)) == set()
    sock.send(watch(fresh=True))
    assert recv_within(sock, 5).type == p.ABORT


def test_only_a_worker_dialling_its_masters_own_plane_watches():
    from pyproof.actors.trees import master_address
    from pyproof.actors.worker import watches_master

    assert watches_master(master_address("/run/d", "abc"))
    assert not watches_master("ipc:///run/d/tunnel-abc.ipc")  # another host's worker
    assert not watches_master("tcp://10.0.0.1:4000")


def test_a_malformed_watch_is_answered_with_a_protocol_error(plane):
    _, sock = plane
    sock.send(encode_frame(p.WATCH, {"worker": "worker-0", "pid": "one"}))
    frame = recv_within(sock, 5)
    assert frame.type == p.ERROR
    assert frame.payload["reason"] == "protocol error: field 'pid' must be int, got str"


def test_a_watch_held_when_the_plane_closes_is_dropped_cleanly(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    with pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000) as sock:
        sock.send(watch(fresh=True))
        time.sleep(0.3)
        plane.close()
        assert not plane._watches


# -- real sessions ------------------------------------------------------------------------

def test_a_sessions_workers_watch_for_queries_and_every_query_runs_once():
    with pyproof.connect("lite://?workers=2") as session:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            watchers = session.status()["master"]["watchers"]
            if len(watchers) == 2:
                break
            time.sleep(0.05)
        assert sorted(w.partition("#")[0] for w in watchers) == ["worker-0", "worker-1"]
        for cycles in (1, 7, 1000):
            result = session.process("tests.sample_selectors:Cycles", cycles=cycles)
            assert result.stats.entries == cycles
            assert result.outputs == {"count": cycles, "sum": cycles * (cycles - 1) // 2}


def _watchers(session) -> list[str]:
    return sorted(w.partition("#")[0] for w in session.status()["master"].get("watchers", []))


def _wait(check, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_workers_whose_watch_died_with_the_master_get_queries_and_watch_the_new_one():
    # the restarted master knows no watcher: its queries go by RunQuery; the workers' watch
    # of the old master is never answered, so each makes a fresh one within WATCH_WITHIN
    from pyproof.actors.worker import WATCH_WITHIN

    with pyproof.connect("lite://?workers=2") as session:
        assert _wait(lambda: _watchers(session) == ["worker-0", "worker-1"], 10)
        old = int(session.status()["pid"])
        os.kill(old, signal.SIGKILL)
        assert _wait(lambda: int(session.status()["pid"]) != old and
                     len(session.status()["workers"]) == 2, 15), "the master was not restarted"
        assert _watchers(session) == []
        result = session.process("tests.sample_selectors:Cycles", cycles=10)
        assert result.outputs == {"sum": 45, "count": 10}
        assert _wait(lambda: _watchers(session) == ["worker-0", "worker-1"], WATCH_WITHIN + 10)
        result = session.process("tests.sample_selectors:Cycles", cycles=20)
        assert result.outputs == {"sum": 190, "count": 20}
        assert _worker_logs(session.log_dir).count("query_watch_unanswered") == 2


def _worker_logs(log_dir: str) -> str:
    text = ""
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("worker"):
            with open(os.path.join(log_dir, name), encoding="utf-8") as f:
                text += f.read()
    return text


def test_a_worker_queues_a_query_told_both_ways_once_and_in_the_masters_order(
        tmp_path, monkeypatch):
    # the worker's side of a RUN on a real socket (its actor thread's handlers, called
    # here): RunQuery(q1) came first (it was not watching yet), then its first watch is
    # answered [q1, q2]: q1 is not queued twice, q2 comes after it
    import threading
    from collections import deque

    from pyproof.actors import messages as m
    from pyproof.actors.worker import Worker

    address = f"ipc://{tmp_path}/master-s1.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    worker = Worker()
    worker.worker_id, worker.session_id, worker.packet_address = "worker-0", "s1", address
    worker.queued, worker.seen, worker._queries = deque(), deque(maxlen=10), threading.Event()
    armed: list[object] = []
    monkeypatch.setattr(worker, "wakeupAfter", lambda delay, payload=None: armed.append(payload))
    try:
        plane.worker_joined(ME)
        plane.start_query("q1", spec(tmp_path))
        plane.start_query("q2", spec(tmp_path))
        assert worker._run(m.RunQuery(query_id="q1", spec=spec(tmp_path)))
        worker._watch_again(fresh=True)
        deadline = time.monotonic() + 5
        while len(worker.queued) < 2 and time.monotonic() < deadline:
            worker._watch_answers()  # as Thespian calls it when the socket is readable
            time.sleep(0.01)
        assert [q.query_id for q in worker.queued] == ["q1", "q2"]
        assert worker.queued[1].spec == spec(tmp_path)
        assert armed == [None]  # the packet-time check, armed for the new query
        assert held(plane)  # and it watches again
        worker._run(m.RunQuery(query_id="q2", spec=spec(tmp_path)))  # a late RunQuery
        assert [q.query_id for q in worker.queued] == ["q1", "q2"]
    finally:
        worker._close_watch()
        plane.close()


def test_a_query_that_cannot_go_as_run_goes_by_run_query_and_the_plane_serves_on(
        plane, tmp_path, monkeypatch):
    master, sock = plane
    sock.send(watch(fresh=True))
    assert held(master)
    real = QuerySpec.to_wire
    monkeypatch.setattr(QuerySpec, "to_wire", lambda self: {**real(self), "x": object()})
    assert master.start_query("q1", spec(tmp_path)) == set()  # RunQuery to every worker
    assert held(master)  # its watch waits on
    with pynng.Req0(dial=master.address, recv_timeout=5000, resend_time=-1) as again:
        again.send(watch(fresh=True, worker="worker-1"))  # news it cannot be sent: by RunQuery
        assert recv_within(again, 5).type == p.ABORT
    assert master.statistics()["watchers"] == [ME]
    monkeypatch.setattr(QuerySpec, "to_wire", real)
    assert master.start_query("q2", spec(tmp_path)) == {ME}  # queued: told at once
    assert [q["query"] for q in recv_within(sock, 5).payload["queries"]] == ["q1", "q2"]
