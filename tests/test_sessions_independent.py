"""A new session never waits for other sessions' closes (the sessions supervisor's
children are independent: `SupFlags(independent=True)`, supervision/core.py).

Under OTP's order (one start or stop at a time) a connect made while sessions
were closing waited for every one of those closes: after a storm of 60
clients a fresh client waited about 10 s, PROOF's "under load users could not
connect". Real daemon, real sessions; a closing session is made slow by
freezing its supervisor (SIGSTOP) just before its client closes it: it then
ends only when the daemon kills it (its watchdog, or the shutdown timeout).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import pyproof
from pyproof.supervision.process_tree import is_alive
from tests.daemon_helpers import Background, Daemon

CLOSING = 12  # sessions closed one after another while the fresh client connects
EVERY = 0.5  # seconds between two closes: each lasts longer (about 2 s), so they overlap
BOUND = 120.0  # generous: only a wedge reaches it


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def open_and_query(url: str, t0: float) -> dict:
    with pyproof.connect(f"{url}?workers=1") as session:
        ready = time.monotonic() - t0
        result = session.process("tests.sample_selectors:Cycles", cycles=100, progress=False,
                                 timeout=BOUND)
        done = time.monotonic() - t0
    return {"ready": ready, "done": done, "sum": result.outputs["sum"]}


def test_a_fresh_session_opens_and_answers_while_other_sessions_keep_closing(daemon):
    old = [pyproof.connect(f"{daemon.url}?workers=1") for _ in range(CLOSING)]
    pids = daemon.wait_for(lambda p: all(f"session-{s.id}" in p for s in old))
    closing = [pids[f"session-{s.id}"] for s in old]
    gone: dict[int, float] = {}  # a closed session's supervisor pid -> when it was gone
    stop = threading.Event()
    t0 = time.monotonic()

    def watch() -> None:
        while not stop.is_set() and len(gone) < len(closing):
            for pid in closing:
                if pid not in gone and not is_alive(pid):
                    gone[pid] = time.monotonic() - t0
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        os.kill(closing[0], signal.SIGSTOP)
        old[0].close()  # answered at once; the session's stop goes on in the daemon
        fresh = Background(open_and_query, daemon.url, t0)
        for session, pid in zip(old[1:], closing[1:], strict=True):
            time.sleep(EVERY)
            os.kill(pid, signal.SIGSTOP)
            session.close()
        answer = fresh.result(timeout=BOUND)
        watcher.join(BOUND)
        assert len(gone) == len(closing), "the closed sessions were never stopped"
    finally:
        stop.set()
        for pid in closing:  # a failed run: let the daemon's stop reap them
            if is_alive(pid):
                os.kill(pid, signal.SIGCONT)
    assert answer["sum"] == sum(range(100))
    last_close = max(gone.values())
    # the fresh session was up, and its query answered, while the same sessions supervisor
    # was still carrying out the closes (one start or stop at a time, it started the fresh
    # session only once no close was left: after the last)
    assert answer["done"] < last_close, (
        f"the fresh session was ready after {answer['ready']:.2f} s and answered after "
        f"{answer['done']:.2f} s, not before the last close ended ({last_close:.2f} s): it "
        f"waited for the closes (they ended at {sorted(round(t, 2) for t in gone.values())})")
