"""The pure parts of the master's direct route (actors/master_direct.py) and of the sessions
supervisor's idle check that hears of it (`sessions.last_use`)."""

from __future__ import annotations

import pytest

from pyproof.actors.master_direct import BadDirectRequest, direct_address, parse_request
from pyproof.actors.sessions import last_use
from pyproof.query.spec import QuerySpec
from pyproof.transport import sealing
from pyproof.transport.frames import encode_frame

KEY = sealing.data_key(b"secret", "s1")
SPEC = QuerySpec(selector="tests.sample_selectors:Cycles", cycles=3)


def sealed(kind: str, payload, *, session: str = "s1", key: bytes = KEY) -> bytes:
    return sealing.seal(key, encode_frame(kind, payload, session=session))


def test_the_direct_address_sits_beside_the_data_plane_and_only_for_a_local_one():
    assert direct_address("ipc:///run/d/master-abc.ipc") == "ipc:///run/d/direct-abc.ipc"
    assert direct_address("tcp://10.0.0.1:1234") == ""
    assert direct_address("ipc:///run/d/tunnel-abc.ipc") == ""


def test_a_sealed_start_and_stop_of_the_session_are_parsed():
    start = parse_request(KEY, "s1", sealed("start_query", {"query": "q1",
                                                           "spec": SPEC.to_wire()}))
    assert (start.kind, start.query_id, start.spec) == ("start_query", "q1", SPEC)
    stop = parse_request(KEY, "s1", sealed("stop_query", {"query": "q1", "abort": True}))
    assert (stop.kind, stop.query_id, stop.abort, stop.spec) == ("stop_query", "q1", True, None)


@pytest.mark.parametrize(("wire", "match"), [
    (sealed("start_query", {"query": "q"}, key=sealing.data_key(b"other", "s1")),
     "not sealed with session s1's key"),
    (b"short", "not sealed with session s1's key"),
    (sealed("start_query", {"query": "q"}, session="s2"), "unknown session 's2'"),
    (sealed("close_session", {"query": "q"}), "unknown request 'close_session'"),
    (sealed("stop_query", {"query": 7}), "'query' must be a query id"),
    (sealed("start_query", {"query": "q", "spec": {"cycles": "x"}}), "query q:"),
    (sealing.seal(KEY, b"\xff not cbor"), "malformed request"),
], ids=["other-key", "short", "other-session", "other-kind", "bad-id", "bad-spec", "not-cbor"])
def test_anything_else_is_refused_saying_why(wire, match):
    with pytest.raises(BadDirectRequest, match=match):
        parse_request(KEY, "s1", wire)


def test_a_session_without_a_data_key_takes_nothing_directly():
    with pytest.raises(BadDirectRequest, match="no data key"):
        parse_request(b"", "s1", sealed("stop_query", {"query": "q"}))


def test_queries_sent_straight_to_the_master_count_as_use_of_the_session():
    used = (100.0, "StartQuery")
    # the master heard from its client 5 s ago, after the last request the supervisor saw
    assert last_use(used, {"master": {"direct": {"idle_for": 5.0}}}, now=200.0) == (
        195.0, "StartQuery")
    # older than what the supervisor saw, missing or malformed: what it saw stands
    assert last_use(used, {"master": {"direct": {"idle_for": 150.0}}}, now=200.0) == used
    assert last_use(used, {"master": {"direct": {"idle_for": None}}}, now=200.0) == used
    assert last_use(used, {"master": {"direct": {"idle_for": True}}}, now=200.0) == used
    assert last_use(used, {"master": {"direct": {"idle_for": -1}}}, now=200.0) == used
    assert last_use(used, {"error": "no such session"}, now=200.0) == used
