"""The watchdog with heartbeats, on a real Thespian system: an idle child is not pinged, a
frozen child or one stuck in a handler is still killed and restarted within about the old
bound (ping interval 0.5 s + timeout 2 s), and a busy one is left to work."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from pyproof.supervision import heartbeat
from pyproof.supervision.process_tree import is_alive, kill_tree
from tests.supervisor_helpers import (
    PatientStart,
    Running,
    Stall,
    Watched,
    WatchingSupervisor,
    read_lines,
)

ASK_TIMEOUT = 60.0
RESTART_WAIT = 15.0
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]




@pytest.fixture
def supervise(system):
    pids: list[int] = []

    def start(children, needy=()) -> Running:
        sup = system.createActor(WatchingSupervisor)
        corr = uuid.uuid4().hex
        reply = system.ask(sup, Watched(corr=corr, children=tuple(children),
                                        needy=tuple(needy)), ASK_TIMEOUT)
        assert isinstance(reply, Running) and reply.corr == corr, reply
        pids.append(reply.pid)
        return reply

    yield start
    for pid in pids:
        kill_tree(pid)


def starts(directory, name) -> list[tuple[int, float]]:
    return [(int(pid), float(t)) for pid, t in
            (line.split() for line in read_lines(str(directory), name, "starts"))]


def wait_restart(directory, name) -> tuple[int, float]:
    """The second incarnation's (pid, start time), waited for with a bound."""
    deadline = time.monotonic() + RESTART_WAIT
    while time.monotonic() < deadline:
        found = starts(directory, name)
        if len(found) >= 2:
            return found[1]
        time.sleep(0.02)
    raise AssertionError(f"{name} was not restarted within {RESTART_WAIT} s")


def test_an_idle_child_is_not_pinged_but_one_that_wants_pings_is(supervise, tmp_path):
    d = str(tmp_path)
    supervise([PatientStart(directory=d, name="idle"), PatientStart(directory=d, name="needy")],
              needy=("needy",))
    time.sleep(3.0)  # the window itself: six ping rounds of the old watchdog
    assert read_lines(d, "idle", "pings") == []  # its heartbeat vouches for it
    assert len(read_lines(d, "needy", "pings")) >= 3
    assert len(starts(d, "idle")) == len(starts(d, "needy")) == 1


def test_a_frozen_idle_child_is_killed_and_restarted_within_the_old_bound(supervise, tmp_path):
    d = str(tmp_path)
    supervise([PatientStart(directory=d, name="a"), PatientStart(directory=d, name="b")])
    (pid, _), = starts(d, "a")
    (sibling, _), = starts(d, "b")
    time.sleep(0.6)  # idle and vouched for by its heartbeat, not pinged
    frozen = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        new_pid, restarted = wait_restart(d, "a")
    finally:
        if is_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert new_pid != pid and not is_alive(pid)
    assert 0.5 <= restarted - frozen < 3.5, restarted - frozen  # it froze after its last look
    assert starts(d, "b") == [(sibling, starts(d, "b")[0][1])]  # the sibling is untouched


def test_a_child_stuck_asleep_in_a_handler_is_killed_and_restarted(supervise, tmp_path):
    d = str(tmp_path)
    supervise([PatientStart(directory=d, name="a", stall=Stall(seconds=60.0, spin=False))])
    (pid, _), = starts(d, "a")
    new_pid, restarted = wait_restart(d, "a")
    stalled = float(read_lines(d, "a", "stalls")[0])
    assert new_pid != pid and not is_alive(pid)
    assert 2.5 <= restarted - stalled < 4.0, restarted - stalled


def test_a_child_busy_in_a_long_handler_is_not_taken_for_hung(supervise, tmp_path):
    d = str(tmp_path)
    supervise([PatientStart(directory=d, name="a", stall=Stall(seconds=4.0, spin=True))])
    (pid, _), = starts(d, "a")
    deadline = time.monotonic() + 30.0
    while read_lines(d, "a", "stalls")[-1:] != ["done"]:
        assert time.monotonic() < deadline, "the busy handler never finished"
        time.sleep(0.05)
    time.sleep(0.5)  # its answer to the ping sent while it worked is in flight
    assert [p for p, _ in starts(d, "a")] == [pid] and is_alive(pid)
    assert read_lines(d, "a", "pings")  # it was asked while busy, and answered after


def test_a_child_starved_of_cpu_in_a_handler_is_not_taken_for_hung(supervise, tmp_path):
    """Runnable but waiting for a CPU (the machine overloaded: here SCHED_IDLE on a CPU
    taken by three burners for 6 s) is starved, not hung: its run-queue wait grows, not its
    CPU time. It finishes once the load is gone and answers; it used to be killed as hung."""
    d = str(tmp_path)
    cpu = max(os.sched_getaffinity(0))
    supervise([PatientStart(directory=d, name="a",
                            stall=Stall(seconds=6.0, spin=True, starve_on=cpu))])
    (pid, _), = starts(d, "a")
    deadline = time.monotonic() + 30.0
    while read_lines(d, "a", "stalls")[-1:] != ["done"]:
        assert time.monotonic() < deadline, "the starved handler never finished"
        assert [p for p, _ in starts(d, "a")] == [pid], "the starved child was killed"
        time.sleep(0.05)
    time.sleep(0.5)  # its answer to the ping sent while it was starved is in flight
    assert [p for p, _ in starts(d, "a")] == [pid] and is_alive(pid)
    assert read_lines(d, "a", "pings")  # it was asked while starved, and answered after
    assert float(read_lines(d, "a", "cpu")[0]) < 1.0  # 6 s in the handler, starved


def test_a_supervisor_finds_and_stamps_its_childs_heartbeat_page():
    beat = heartbeat.beat()
    watcher = heartbeat.find(os.getpid())
    assert watcher is not None
    try:
        beat.enter(12.5)
        assert watcher.read(now=20.0) == (12.5, False)
        assert beat.watched() == 20.0
        beat.leave()
        beat.want_pings(True)
        assert watcher.read(now=21.0) == (None, True)
    finally:
        beat.want_pings(False)
        watcher.close()
    assert heartbeat.find(1) is None  # not ours to read, or not a pyproof actor
