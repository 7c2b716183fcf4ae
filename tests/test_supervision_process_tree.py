"""Killing process trees for real: small trees of `sleep`, a forking loop, a parent's death."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pyproof.supervision import process_tree
from pyproof.supervision.process_tree import (
    children_of,
    descendants_of,
    is_alive,
    kill_tree,
    set_parent_death_signal,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

TREE = 'sleep 60 & bash -c "sleep 60 & sleep 60 & wait" & wait'


def spawn(script: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", script], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


def at_least(n: int, find):
    """Wait until `find()` returns at least `n` pids; return them."""
    return wait_for(lambda: (lambda found: found if len(found) >= n else None)(find()))


def gone_and_reaped(pids) -> bool:
    for p in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, os.WNOHANG)  # orphans come to us: the test process is a subreaper
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


def test_kill_tree_kills_a_process_and_every_descendant_and_reaps_them():
    proc = spawn(TREE)
    tree = at_least(4, lambda: descendants_of(proc.pid))
    victims = kill_tree(proc.pid, timeout=5.0)
    assert victims[0] == proc.pid
    assert set(tree) <= set(victims)
    proc.wait(timeout=5)  # kill_tree reaped it already: no status left for Popen
    wait_for(lambda: gone_and_reaped(victims))


def test_kill_tree_catches_a_process_that_keeps_forking():
    proc = spawn("for i in $(seq 300); do sleep 60 & done; wait")
    wait_for(lambda: len(children_of(proc.pid)) >= 5)
    victims = kill_tree(proc.pid)
    proc.wait(timeout=5)
    wait_for(lambda: gone_and_reaped(victims))
    assert not [p for p in descendants_of(os.getpid()) if is_alive(p)]


def test_kill_tree_can_spare_the_root():
    proc = spawn("sleep 60 & sleep 60 & wait; sleep 60")
    kids = at_least(2, lambda: children_of(proc.pid))
    victims = kill_tree(proc.pid, include_root=False)
    assert proc.pid not in victims and set(kids) <= set(victims)
    assert is_alive(proc.pid)
    kill_tree(proc.pid)
    proc.wait(timeout=5)


def test_a_polite_signal_is_followed_by_sigkill_after_the_timeout():
    ignores_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
                   "print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", ignores_term], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    start = time.monotonic()
    kill_tree(proc.pid, signal.SIGTERM, timeout=0.3)
    assert time.monotonic() - start >= 0.3
    assert not is_alive(proc.pid)
    proc.wait(timeout=5)
    proc.stdout.close()


def test_a_polite_signal_that_is_obeyed_needs_no_sigkill():
    proc = spawn("sleep 60")
    start = time.monotonic()
    kill_tree(proc.pid, signal.SIGTERM, timeout=5.0)
    assert time.monotonic() - start < 4.0 and not is_alive(proc.pid)
    proc.wait(timeout=5)


def test_a_child_with_a_parent_death_signal_dies_with_its_parent():
    script = textwrap.dedent("""
        import os, time
        from pyproof.supervision.process_tree import set_parent_death_signal
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            assert set_parent_death_signal(parent=parent)
            print(os.getpid(), flush=True)
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(process_tree.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert is_alive(child)
    proc.kill()  # only the parent
    proc.wait(timeout=5)
    proc.stdout.close()
    wait_for(lambda: gone_and_reaped([child]))


def test_set_parent_death_signal_reports_success_here():
    # SIGCHLD is ignored by default: setting it on ourselves is harmless
    assert set_parent_death_signal(signal.SIGCHLD) is True
    assert set_parent_death_signal(0) is True


def test_the_proc_stat_scan_finds_the_same_children_as_the_children_files():
    proc = spawn("sleep 60 & sleep 60 & wait")
    kids = at_least(2, lambda: children_of(proc.pid))
    assert sorted(process_tree._children_from_stat(proc.pid)) == sorted(kids)
    kill_tree(proc.pid)
    proc.wait(timeout=5)
