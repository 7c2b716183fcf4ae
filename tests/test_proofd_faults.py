"""proofd under fire: a crash or a hang restarts only the faulty actor.

Each test runs its own real daemon (Thespian actors, nng sockets, real ROOT
files); the autouse leak fixture then checks nothing was left behind.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import pyproof
from pyproof.client.control import ControlClient, RequestRefused, current_user
from pyproof.logs import read_records
from pyproof.sandbox import make_private_dir, open_private, sandbox_dir
from pyproof.supervision.process_tree import is_alive
from tests.conftest import data_file
from tests.daemon_helpers import Background, Daemon, zmumu_reference

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

SLOW = {"sleep": 0.08}


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def slow_query(session):
    return session.process("tests.sample_selectors:SlowCount",
                           dataset=data_file("uproot-Zmumu.root") + ":events", inputs=SLOW,
                           packetizer="basic", packetizer_params={"packet_entries": 40},
                           progress=False)


def assert_exact(result) -> None:
    n, ref = zmumu_reference()
    assert result.outputs["n"] == n == result.stats.entries
    assert result.outputs["mass"] == ref


def session_pids(pids: dict[str, int], session_id: str) -> dict[str, int]:
    return {k: v for k, v in pids.items() if k.startswith(session_id) or k.endswith(session_id)}


def wait_running(session, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = (session.status().get("master") or {}).get("query") or {}
        if query.get("state") == "running" and query.get("processed", 0) > 0:
            return
        time.sleep(0.02)
    raise AssertionError("query did not start running")


@pytest.mark.parametrize("connection", ["callback", "dial"])
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_a_killed_or_frozen_gateway_is_replaced_and_the_running_query_completes_exactly(
        daemon, fault, connection):
    with pyproof.connect(f"{daemon.url}?workers=2&connection={connection}") as session:
        before = daemon.pids()
        mine = session_pids(before, session.id)
        running = Background(slow_query, session)
        wait_running(session)
        os.kill(before["gateway"], getattr(signal, fault))
        after = daemon.wait_for(lambda p: p.get("gateway") not in (None, before["gateway"]))
        t0 = time.monotonic()
        fresh = ControlClient(f"tcp://127.0.0.1:{daemon.port}", attempt_timeout=1.0)
        try:  # a new client logs in and is answered at once
            assert session.id in fresh.call("status", deadline=5.0)["sessions"]
        finally:
            fresh.close()
        assert time.monotonic() - t0 < 1.0
        with pyproof.connect(f"{daemon.url}?workers=1") as newcomer:
            assert newcomer.id
        assert_exact(running.result(60))
        assert session_pids(after, session.id) == mine
        assert not is_alive(before["gateway"])


def test_a_request_that_makes_the_gateway_raise_fails_alone_and_the_gateway_goes_on(daemon):
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        before = daemon.pids()
        running = Background(slow_query, session)
        wait_running(session)
        with pytest.raises(RequestRefused, match=(
                r"^the daemon failed while handling request 'debug_crash' \(request id crash-1\):"
                r" RuntimeError: crash requested by a test\. It logged the error with the "
                r"request id \(event 'request_failed' in the gateway's log: `proofctl logs`\); "
                r"other requests are not affected$")):
            daemon.control.call("debug_crash", deadline=5.0, request_id="crash-1")
        # the next request is answered by the same gateway (no restart, no crash loop)
        assert session.id in daemon.control.call("status", deadline=5.0)["sessions"]
        assert_exact(running.result(60))
        after = daemon.pids()
        assert after["gateway"] == before["gateway"]
        assert session_pids(after, session.id) == session_pids(before, session.id)
        failed = [r for r in read_records(daemon.info.log_dir)
                  if r.get("event") == "request_failed"]
        assert [(r["request"], r["request_id"]) for r in failed] == [("debug_crash", "crash-1")]


def test_a_damaged_package_index_fails_only_the_queries_that_read_it(daemon):
    # well-formed JSON of the wrong shape: it passes the index reader and breaks the
    # gateway's start_query handler (a real code path, no hook)
    store = os.path.join(sandbox_dir(), "packages", current_user())
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        gateway = daemon.pids()["gateway"]
        make_private_dir(store)
        with open_private(os.path.join(store, "index.json"), "w") as f:
            json.dump({"sessions": []}, f)
        with pytest.raises(pyproof.ProofError, match=(
                r"the daemon failed while handling request 'start_query' \(request id \w+\): "
                r"AttributeError: .*It logged the error with the request id")):
            slow_query(session)
        os.remove(os.path.join(store, "index.json"))
        assert_exact(slow_query(session))  # the same session, the same gateway
        assert daemon.pids()["gateway"] == gateway


def test_a_worker_killed_mid_query_is_replaced_and_the_result_is_exact(daemon):
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        before = daemon.pids()
        victim = before[f"{session.id}/worker-0"]
        running = Background(slow_query, session)
        wait_running(session)
        os.kill(victim, signal.SIGKILL)
        result = running.result(60)
        assert_exact(result)
        assert result.lineage["requeued"] or result.stats.workers["worker-0"].entries >= 0
        after = daemon.wait_for(lambda p: p.get(f"{session.id}/worker-0") not in (None, victim))
        assert after[f"{session.id}/master"] == before[f"{session.id}/master"]
        # the session goes on with its replaced worker
        assert_exact(slow_query(session))


def test_a_killed_master_fails_its_query_cleanly_and_other_sessions_run_on(daemon):
    with pyproof.connect(f"{daemon.url}?workers=1") as victim, \
            pyproof.connect(f"{daemon.url}?workers=1") as bystander:
        pids = daemon.pids()
        doomed = Background(slow_query, victim)
        fine = Background(slow_query, bystander)
        wait_running(victim)
        os.kill(pids[f"{victim.id}/master"], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(pyproof.QueryError, match=r"master was restarted"):
            doomed.result(30)
        assert time.monotonic() - t0 < 15
        assert_exact(fine.result(60))
        # the victim session has a new master and runs the next query
        assert_exact(slow_query(victim))


def test_a_child_that_keeps_dying_escalates_and_only_its_session_goes(daemon):
    with pyproof.connect(f"{daemon.url}?workers=1") as doomed, \
            pyproof.connect(f"{daemon.url}?workers=1") as bystander:
        key = f"{doomed.id}/worker-0"
        killed = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = daemon.pids()
            if f"session-{doomed.id}" not in pids:
                break
            pid = pids.get(key)
            if pid and pid not in killed:
                killed.add(pid)
                # SIGTERM: an exit pyproof counts against the session (a SIGKILL or an exit
                # status is what a selector or the OOM killer does: not the session's fault)
                os.kill(pid, signal.SIGTERM)
            time.sleep(0.01)
        pids = daemon.pids()
        assert f"session-{doomed.id}" not in pids, "the session should have given up"
        assert len(killed) >= 10
        assert not any(is_alive(p) for p in killed)
        result = bystander.process("tests.sample_selectors:ZmumuMass",
                                   dataset=data_file("uproot-Zmumu.root") + ":events")
        assert result.stats.entries == 2304
        with pytest.raises(pyproof.QueryError, match=r"no session"):
            doomed.process("tests.sample_selectors:ZmumuMass",
                           dataset=data_file("uproot-Zmumu.root") + ":events")
    with open(os.path.join(daemon.info.log_dir, "session.jsonl")) as f:
        assert "reached_max_restart_intensity" in f.read()
    # and proofctl shows that session's log lines
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "logs", doomed.id,
                          "--port", str(daemon.port), "--json"],
                         capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events and all(e["session"] == doomed.id for e in events)
    assert any(e["event"] == "reached_max_restart_intensity" for e in events)


def test_a_request_stuck_on_a_frozen_master_does_not_hold_up_other_clients(daemon):
    with pyproof.connect(f"{daemon.url}?workers=1") as stuck, \
            pyproof.connect(f"{daemon.url}?workers=1") as other:
        master = daemon.pids()[f"{stuck.id}/master"]
        os.kill(master, signal.SIGSTOP)
        try:
            waiting = Background(stuck.status)
            time.sleep(0.3)  # the frozen master now holds one control request
            t0 = time.monotonic()
            assert other.status()["master"]["query"] is None
            assert time.monotonic() - t0 < 2.0
        finally:
            if is_alive(master):
                os.kill(master, signal.SIGCONT)
        waiting.result(60)  # answered (by the restarted master) or failed cleanly: no hang


def test_a_closed_session_leaves_no_socket_file(daemon):
    session = pyproof.connect(f"{daemon.url}?workers=1&connection=dial")
    run_dir = os.path.join(daemon.info.home, "run")
    mine = [f for f in os.listdir(run_dir) if session.id in f]
    assert mine  # the master's socket (and the client-dials outbox)
    session.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(session.id in f for f in os.listdir(run_dir)):
        time.sleep(0.05)
    assert not [f for f in os.listdir(run_dir) if session.id in f]


def test_the_daemon_exits_non_zero_when_its_root_supervisor_is_gone(daemon):
    from pyproof.cli.daemon import info_process

    process = info_process[daemon.info.pid]
    root = daemon.pids()["root"]
    os.kill(root, signal.SIGKILL)  # as if the root had given up: nothing would restart
    assert process.wait(timeout=15) == 3  # so systemd (or an admin's loop) restarts proofd
