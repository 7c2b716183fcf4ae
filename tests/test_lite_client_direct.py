"""A session's client starts (and stops) its queries straight on its master's socket.

The gateway offers the master's direct route in its answer to a query it let
through; the client's next starts and stops go there, sealed with the
session's data key, past the gateway and the supervisors (issue 12). Real lite
clusters and daemons: the route is proven used by the master's own count, a
frozen master sends the query the long way and it runs once, a resent start
is answered and not run again, and a request not sealed with the session's
key is refused with a named error.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import pyproof
from pyproof.client.direct import DirectRoute
from pyproof.errors import DirectRefused
from pyproof.transport import sealing
from tests.daemon_helpers import Daemon

CYCLES = "tests.sample_selectors:Cycles"


def _direct(session) -> dict:
    return (session.status().get("master") or {}).get("direct") or {}


def _accepted(log_dir: str, query_id: str) -> int:
    """How many times the master accepted `query_id` (its `query_accepted` log events)."""
    count = 0
    for name in os.listdir(log_dir):
        if name.startswith("master") and name.endswith(".jsonl"):
            with open(os.path.join(log_dir, name), encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    count += row.get("event") == "query_accepted" and row.get("query") == query_id
    return count


def test_queries_after_the_first_go_straight_to_the_master_and_their_stop_too():
    with pyproof.connect("lite://?workers=1") as session:
        assert session.process(CYCLES, cycles=10).outputs == {"sum": 45, "count": 10}
        assert _direct(session)["served"] == 0  # the first went the long way: it learnt the route
        for n in (3, 4, 5):
            assert session.process(CYCLES, cycles=n).outputs["count"] == n
        assert _direct(session)["served"] == 3
        # a stop goes straight too, and a stop of a query the master never ran is refused
        handle = session.submit("tests.sample_selectors:SlowCount",
                                dataset=os.path.join(os.path.dirname(__file__), "data",
                                                     "uproot-Zmumu.root") + ":events",
                                inputs={"sleep": 0.2}, packetizer="basic",
                                packetizer_params={"packet_entries": 40})
        handle.stop()
        assert handle.result(timeout=30).stopped
        assert _direct(session)["served"] == 5
        with pytest.raises(pyproof.QueryError, match="cannot stop query 'nosuchquery'"):
            session._query_request("stop_query", {"query": "nosuchquery"})


def test_a_frozen_master_sends_the_query_the_long_way_and_it_runs_once():
    with pyproof.connect("lite://?workers=1") as session:
        session.process(CYCLES, cycles=1)
        session.process(CYCLES, cycles=1)
        route = session._direct
        assert route is not None
        pid = int(session.status()["pid"])
        os.kill(pid, signal.SIGSTOP)
        # thawed before its supervisor's watchdog (2 s) gives up on it, after the direct
        # route's bound (1 s): both routes then hold the start
        thaw = threading.Timer(1.3, os.kill, (pid, signal.SIGCONT))
        thaw.start()
        try:
            t0 = time.monotonic()
            handle = session.submit(CYCLES, cycles=7)
            result = handle.result(timeout=30)
        finally:
            thaw.join()
        assert 1.0 <= time.monotonic() - t0 < 10
        assert result.outputs == {"sum": 21, "count": 7}
        assert int(session.status()["pid"]) == pid  # the same master, not a restarted one
        # it went the long way: the route was dropped, and learnt again from its answer
        assert session._direct is not None and session._direct is not route
        assert [q.query for q in session.queries()].count(handle.query) == 1
        assert _accepted(session.log_dir, handle.query) == 1
        # the route is learnt again from that answer: the next query goes straight
        served = _direct(session)["served"]
        assert session.process(CYCLES, cycles=2).outputs["count"] == 2
        assert _direct(session)["served"] == served + 1


def test_a_start_sent_again_by_either_route_is_answered_and_not_run_twice():
    with pyproof.connect("lite://?workers=1") as session:
        session.process(CYCLES, cycles=1)
        sent = []
        request = session._query_request
        session._query_request = lambda kind, payload: sent.append(payload) or request(
            kind, payload)
        handle = session.submit(CYCLES, cycles=6)
        assert handle.result(timeout=30).outputs == {"sum": 15, "count": 6}
        again = DirectRoute(session._direct.address, session.id, session.data_key)
        try:
            assert again.call("start_query", sent[0]) == {"query": handle.query}
        finally:
            again.close()
        assert session._call("start_query", sent[0])["query"] == handle.query  # the long way
        assert [q.query for q in session.queries()].count(handle.query) == 1
        assert _accepted(session.log_dir, handle.query) == 1
        assert _direct(session)["served"] == 2


def test_a_request_not_sealed_with_the_sessions_key_or_for_another_session_is_refused():
    with pyproof.connect("lite://?workers=1") as session:
        session.process(CYCLES, cycles=1)
        address = session._direct.address
        spec = {"query": "q-intruder", "spec": {}}
        stranger = DirectRoute(address, session.id, sealing.data_key(b"not the secret",
                                                                       session.id))
        other = DirectRoute(address, "another-session", session.data_key)
        try:
            with pytest.raises(DirectRefused, match=f"refused 'start_query': the request is not "
                                                    f"sealed with session {session.id}'s key"):
                stranger.call("start_query", spec)
            with pytest.raises(DirectRefused, match="unknown session 'another-session'"):
                other.call("stop_query", {"query": "q"})
        finally:
            stranger.close()
            other.close()
        assert _direct(session)["served"] == 0  # refused before anything was done
        assert session.process(CYCLES, cycles=2).outputs["count"] == 2  # the session's own
        assert _direct(session)["served"] == 1


def test_a_daemons_session_goes_straight_and_a_client_that_cannot_reach_it_goes_the_long_way():
    d = Daemon()
    try:
        session = pyproof.connect(f"{d.url}?workers=1")
        try:
            session.process(CYCLES, cycles=1)
            assert session.process(CYCLES, cycles=3).outputs["count"] == 3
            direct = _direct(session)
            assert direct["served"] == 1
            # a client that cannot reach the master's socket (another host: here, its file is
            # gone) is offered the route, cannot dial it and goes on the long way
            os.unlink(direct["address"][len("ipc://"):])
            other = pyproof.connect(f"{d.url}", session=session.id)
            try:
                for n in (4, 5):
                    assert other.process(CYCLES, cycles=n).outputs["count"] == n
                assert other._direct is None
                assert other._direct_unreachable == {direct["address"]}
            finally:
                other.detach()
            assert _direct(session)["served"] == 1
            # the first client's connection outlives the file: it still goes straight
            assert session.process(CYCLES, cycles=6).outputs["count"] == 6
            assert _direct(session)["served"] == 2
        finally:
            session.close()
    finally:
        d.stop()
