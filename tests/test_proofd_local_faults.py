"""Local faults stay local (issue 13): a selector that kills its worker (exit, segfault)
costs its query, never its session; the query fails at the first poisoned packet."""

from __future__ import annotations

import os
import signal
import time

import pytest

import pyproof
from pyproof.supervision.process_tree import is_alive
from tests.conftest import data_file
from tests.daemon_helpers import Daemon
from tests.test_proofd_faults import assert_exact, slow_query

pytestmark = pytest.mark.slow  # a long module: started first (conftest)


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


ZMUMU = data_file("uproot-Zmumu.root") + ":events"
PACKETS = {"packetizer": "basic", "packetizer_params": {"packet_entries": 100},
           "progress": False}


def test_workers_killed_by_their_selector_again_and_again_never_end_the_session(daemon):
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        # 12 poisoned packets x 3 deaths each: beyond the session's own restart intensity
        result = session.process("tests.sample_selectors:ExitsBelow", dataset=ZMUMU,
                                 inputs={"below": 1200}, on_missing="skip", **PACKETS)
        poisoned = result.lineage["poisoned"]
        # only the killing packets: never one a dying worker had been granted ahead
        assert all(p["entry_stop"] <= 1200 for p in poisoned), poisoned
        assert sum(p["entry_stop"] - p["entry_start"] for p in poisoned) == 1200
        assert result.stats.entries == result.outputs["n"] == 2304 - 1200
        assert all_died_running_it(poisoned)
        assert f"session-{session.id}" in daemon.pids()
        assert_exact(slow_query(session))


def all_died_running_it(poisoned: list[dict]) -> bool:
    """Each poisoned range names the 3 worker processes that died running it, and why."""
    for p in poisoned:
        assert len(p["workers"]) == len(set(p["workers"])) == 3, p
        assert all(r == f"{w} died (exit status 1)" for w, r in zip(p["workers"], p["reasons"],
                                                                    strict=True)), p
    return True


def test_the_packet_a_worker_was_granted_ahead_is_not_poisoned_by_the_one_that_kills_it(
        daemon):
    # one worker: it always holds the packet after the killing one, granted ahead
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        result = session.process("tests.sample_selectors:ExitsBelow", dataset=ZMUMU,
                                 inputs={"below": 100}, on_missing="skip", **PACKETS)
        poisoned = result.lineage["poisoned"]
        assert [(p["entry_start"], p["entry_stop"]) for p in poisoned] == [(0, 100)]
        assert all_died_running_it(poisoned)
        assert result.stats.entries == result.outputs["n"] == 2304 - 100


def test_a_segfaulting_selector_fails_its_query_at_the_first_poisoned_packet(daemon):
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        t0 = time.monotonic()
        with pytest.raises(pyproof.QueryError,
                           match=r"PoisonedPacket: .*killed by signal SIGSEGV") as info:
            session.process("tests.sample_selectors:Segfaults", dataset=ZMUMU,
                            inputs={"deadly": 1000}, **PACKETS)
        assert time.monotonic() - t0 < 20
        where = info.value.remote.context
        assert where["file"] == data_file("uproot-Zmumu.root")
        assert where["entry_start"] <= 1000 < where["entry_stop"]
        assert_exact(slow_query(session))


def test_a_selector_that_hangs_in_begin_is_bounded_like_a_packet(daemon):
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        t0 = time.monotonic()
        with pytest.raises(pyproof.QueryError,
                           match=r"PacketTimeout: .*more than 1 s in begin\(\)") as info:
            session.process("tests.sample_selectors:HangsInBegin", dataset=ZMUMU,
                            packet_timeout=1.0, **PACKETS)
        assert time.monotonic() - t0 < 20
        assert info.value.remote.context["worker"] == "worker-0"
        assert_exact(slow_query(session))  # its worker was replaced


def read_pid(path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"no pid in {path}")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_alive(pid):
        time.sleep(0.05)
    return not is_alive(pid)


def test_a_daemon_a_selector_started_in_a_session_of_its_own_dies_with_the_session(
        daemon, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        session.process("tests.sample_selectors:LeavesDaemons", dataset=ZMUMU,
                        inputs={"pidfile": str(pidfile), "setsid": True}, **PACKETS)
        orphan = read_pid(pidfile)
        assert is_alive(orphan)
    assert wait_gone(orphan)


def test_what_a_selector_started_dies_with_its_worker(daemon, tmp_path):
    pidfile = tmp_path / "child.pid"
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        session.process("tests.sample_selectors:LeavesDaemons", dataset=ZMUMU,
                        inputs={"pidfile": str(pidfile)}, **PACKETS)
        orphan = read_pid(pidfile)
        worker = daemon.pids()[f"{session.id}/worker-0"]
        os.kill(worker, signal.SIGKILL)
        assert wait_gone(orphan)
        assert_exact(slow_query(session))


@pytest.mark.slow
def test_a_huge_merge_never_makes_a_healthy_master_look_hung(daemon):
    # 512 MB per worker: decoding and merging hold the GIL for seconds at a time, beyond the
    # watchdog's ping timeout; the master and workers use CPU meanwhile, so they are busy,
    # not hung (about 20 s and 3 GB of memory)
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        master = daemon.pids()[f"{session.id}/master"]
        result = session.process("tests.sample_selectors:SizedOutput", cycles=2,
                                 inputs={"mb": 512}, packetizer="basic",
                                 packetizer_params={"packet_entries": 1}, progress=False)
        big = result.outputs["big"]
        assert big.nbytes == 512 * 2**20 and big[0] == 2.0 and big[1:].sum() == 0.0
        del result, big
        assert daemon.pids()[f"{session.id}/master"] == master
