"""A session's queries go straight from the gateway to its master once it answered one.

The long way (gateway -> sessions -> session -> master) checks the session is
the user's; the master's answer names it, and the gateway sends that user's
next queries for that session straight there. A restarted master (its old
address dead) costs one DIRECT_FALLBACK, never a lost query; the sessions
supervisor still hears of every query (its idle check).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pyproof
from tests.daemon_helpers import Daemon


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(0.05)
    return False


def _gateway_log(log_dir: str) -> str:
    with open(os.path.join(log_dir, "gateway.jsonl"), encoding="utf-8") as f:
        return f.read()


def test_a_query_after_its_master_was_restarted_goes_the_long_way_and_runs():
    with pyproof.connect("lite://?workers=1") as session:
        session.direct_route = False  # the gateway's route (the client's: test_lite_client_direct)
        assert session.process("tests.sample_selectors:Cycles", cycles=10).outputs["count"] == 10
        assert session.process("tests.sample_selectors:Cycles", cycles=10).outputs["count"] == 10
        assert "direct_route_unanswered" not in _gateway_log(session.log_dir)
        old = int(session.status()["pid"])
        os.kill(old, signal.SIGKILL)
        assert _wait(lambda: int(session.status()["pid"]) != old and
                     session.status()["workers"], 15), "the master was not restarted"
        t0 = time.monotonic()
        result = session.process("tests.sample_selectors:Cycles", cycles=10)
        assert result.outputs == {"sum": 45, "count": 10}
        assert time.monotonic() - t0 < 10  # one fallback, not the client's retry (20 s)
        assert "direct_route_unanswered" in _gateway_log(session.log_dir)
        # the new master is learnt: the next query goes straight again
        assert session.process("tests.sample_selectors:Cycles", cycles=10).outputs["count"] == 10
        assert _gateway_log(session.log_dir).count("direct_route_unanswered") == 1


def test_queries_sent_straight_to_the_master_keep_the_session_from_idling():
    d = Daemon(session_idle_timeout=2)
    try:
        session = pyproof.connect(f"{d.url}?workers=1")
        end = time.monotonic() + 5  # well past the idle timeout, with only queries
        while time.monotonic() < end:
            result = session.process("tests.sample_selectors:Cycles", cycles=3)
            assert result.outputs["count"] == 3
            time.sleep(0.2)
        with open(os.path.join(d.info.log_dir, "sessions.jsonl")) as f:
            assert "session_idle_closed" not in f.read()
        session.close()
    finally:
        d.stop()
