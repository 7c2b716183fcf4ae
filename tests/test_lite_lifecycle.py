"""Lifecycle of a lite cluster: nothing is left behind, however the client ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import pyproof
from pyproof.supervision.process_tree import descendants_of, is_alive, session_members
from tests.conftest import data_file

CLIENT = """
import json, sys, time
import pytest

import pyproof
session = pyproof.connect("lite://?workers=2")
print(json.dumps({"daemon": session.cluster.process.pid, "run_dir": session.cluster.run_dir,
                  "thespian": session.cluster.thespian_sessions[0]}),
      flush=True)
time.sleep(600)
"""


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_client_killed_with_sigkill_leaves_no_process_behind():
    client = subprocess.Popen([sys.executable, "-c", CLIENT], stdout=subprocess.PIPE,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        info = json.loads(client.stdout.readline())
        # sessions lead process sessions of their own, under the sessions supervisor
        members = session_members(info["thespian"])
        tree = [client.pid, *descendants_of(client.pid), *members,
                *(d for m in members for d in descendants_of(m))]
        assert info["daemon"] in tree
        # client, daemon, admin, logger, root, gateway, sessions, session, master, 2 workers
        assert len(tree) >= 10, tree
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
        assert wait_until(lambda: not any(is_alive(p) for p in tree), 20), [
            p for p in tree if is_alive(p)]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
        client.stdout.close()
    # the killed client could not remove its private run directory; nothing runs there
    import shutil
    shutil.rmtree(info["run_dir"], ignore_errors=True)


def test_closing_a_session_stops_every_actor_process():
    session = pyproof.connect("lite://?workers=3")
    daemon = session.cluster.process.pid
    members = session_members(session.cluster.thespian_sessions[0])
    tree = [daemon, *descendants_of(daemon), *members,
            *(d for m in members for d in descendants_of(m))]  # sessions: their own sessions
    assert len(tree) >= 10, tree
    result = session.process("tests.sample_selectors:Cycles", cycles=1000)
    assert result.outputs["count"] == 1000
    session.close()
    assert wait_until(lambda: not any(is_alive(p) for p in tree), 10)


def test_a_session_runs_many_queries_in_a_row():
    path = data_file("uproot-Zmumu.root") + ":events"
    with pyproof.connect("lite://?workers=2") as session:
        counts = [session.process("tests.sample_selectors:ZmumuMass", dataset=path,
                                  progress=False).outputs["n"] for _ in range(5)]
    assert counts == [2304] * 5


def test_a_daemon_that_dies_before_it_is_ready_is_reported_with_its_log(tmp_path, monkeypatch):
    # the daemon's interpreter finds a broken thespian first: it exits while booting; the
    # client waits on the ready pipe (client/lite.py) and must notice the exit, not hang
    broken = tmp_path / "thespian"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(pyproof.ConnectError,
                       match=r"^the lite daemon exited with code 1 before it was ready; "
                             r"see .*daemon\.out$"):
        pyproof.connect("lite://?workers=1", timeout=60)


def test_closing_kills_a_session_whose_supervisor_was_orphaned_from_the_actor_tree():
    # the cluster's close kills the actor tree from Thespian's admin down, then looks for
    # what was re-parented away from it: here the session the daemon opened while it
    # booted, whose parent (the sessions supervisor) was SIGKILLed, so that it hangs off
    # this (subreaper) test process instead; no client closes it first
    from pyproof.actors.registry import Registry
    from pyproof.client.lite import LiteCluster
    from pyproof.supervision.process_tree import stat_field

    cluster = LiteCluster(workers=1)
    try:
        registry = Registry(cluster.run_dir)
        assert wait_until(lambda: [len(e.children) for e in registry.entries()] == [2], 30)
        supervisor = registry.entries()[0].supervisor.pid
        session_tree = [supervisor, *descendants_of(supervisor)]
        assert len(session_tree) >= 3, session_tree  # supervisor, master, worker
        sessions_actor = stat_field(supervisor, 1)
        os.kill(sessions_actor, signal.SIGKILL)
        assert wait_until(lambda: stat_field(supervisor, 1) != sessions_actor, 10)
        admin = cluster._admin()
        assert admin is not None and supervisor not in descendants_of(admin)
    finally:
        cluster.close()
    assert not [p for p in session_tree if is_alive(p)]
