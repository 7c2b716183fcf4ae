"""The per-user session limit holds when many connects arrive at once.

The sessions supervisor counts a user's sessions from the moment their start is
issued. Under the one-at-a-time start order a burst of connects queued behind
each other's starts, was not counted yet, and a storm of 60 clients with a
limit of 4 got 17 sessions in. Real daemon (`--max-sessions-per-user 2`),
real clients connecting from threads at once.
"""

from __future__ import annotations

import threading

import pytest

import pyproof
from tests.daemon_helpers import Daemon

LIMIT = 2
CLIENTS = 6


@pytest.fixture
def daemon():
    d = Daemon(max_sessions_per_user=LIMIT)
    yield d
    d.stop()


def test_a_burst_of_connects_gets_exactly_the_limit_and_clear_refusals(daemon):
    go = threading.Barrier(CLIENTS)
    sessions, refusals, others = [], [], []
    lock = threading.Lock()

    def connect() -> None:
        go.wait(timeout=30)
        try:
            session = pyproof.connect(f"{daemon.url}?workers=1")
        except pyproof.ProofError as e:
            with lock:
                (refusals if "limit" in str(e) else others).append(e)
        else:
            with lock:
                sessions.append(session)

    threads = [threading.Thread(target=connect) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not others, others
        assert len(sessions) == LIMIT, f"{len(sessions)} sessions got in (limit {LIMIT})"
        assert len(refusals) == CLIENTS - LIMIT
        assert all(f"already has {LIMIT} sessions (limit {LIMIT}); close one first" in str(e)
                   for e in refusals), refusals
        sessions.pop().close()
        with pyproof.connect(f"{daemon.url}?workers=1") as again:  # room again after a close
            result = again.process("tests.sample_selectors:Cycles", cycles=10, progress=False,
                                   timeout=60)
            assert result.outputs["sum"] == sum(range(10))
    finally:
        for session in sessions:
            session.close()
