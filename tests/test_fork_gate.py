"""A fork while a thread imports waits for it before it begins (actors/fork_gate.py): each
case in a fresh interpreter, a real multiprocessing fork, a module registering fork hooks
imported by the loading thread while the fork waits."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# a module like concurrent.futures.thread: a lock taken before a fork, released after it
HOOKED = """
import os, threading
lock = threading.Lock()
os.register_at_fork(before=lock.acquire, after_in_parent=lock.release,
                    after_in_child=lock.release)
"""

FORK_WHILE_LOADING = """
import multiprocessing, os, sys, threading, time
from pyproof.actors import fork_gate
sys.path.insert(0, {path!r})
started = threading.Event()

def load():
    started.set()
    time.sleep(0.3)
    import hooked  # registers its fork hooks while the fork below waits

loading = threading.Thread(target=load)

def wait():
    if loading.is_alive() and loading is not threading.current_thread():
        loading.join(10)

{gate}
loading.start()
started.wait()

def child():
    os._exit(0 if "hooked" in sys.modules else 3)

p = multiprocessing.get_context("fork").Process(target=child)
p.start()
p.join(10)
print("child", p.exitcode, "loaded in parent", "hooked" in sys.modules)
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_multiprocessing_fork_waits_before_any_fork_hook_runs(tmp_path):
    (tmp_path / "hooked.py").write_text(HOOKED)
    done = run(FORK_WHILE_LOADING.format(path=str(tmp_path), gate="fork_gate.gate(wait)"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "child 0 loaded in parent True\n"  # the child has it whole
    # the module's hooks ran as a pair, or not at all: none half
    assert "Exception ignored" not in done.stderr, done.stderr


def test_a_wait_in_a_fork_hook_alone_runs_hooks_registered_meanwhile_half(tmp_path):
    """Why the gate waits in multiprocessing's launch: the same fork with the wait only
    in an os.register_at_fork hook releases the new module's lock it never took."""
    (tmp_path / "hooked.py").write_text(HOOKED)
    done = run(FORK_WHILE_LOADING.format(path=str(tmp_path),
                                         gate="os.register_at_fork(before=wait)"))
    assert "release unlocked lock" in done.stderr, done.stderr

