"""Kept final frames come again on the client's data plane, not through the daemon's actors.

A client that missed a query's result (detached, or its data plane lost the frame) asks
the master (a small control request) to send the kept frame again; it comes as a live
result does, in sealed chunks on the client's data socket (actors/kept.py). Fetched as
one control reply instead, 64 MB never arrived in 60 s.
"""

from __future__ import annotations

import time

import numpy as np
import pynng
import pytest

import pyproof
from pyproof.actors import kept
from pyproof.errors import QueryError
from tests.daemon_helpers import Daemon

SIZED = "tests.sample_selectors:VariedOutput"
MB64 = 8_000_000  # float64: 64 MB


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def lite():
    with pyproof.connect("lite://?workers=1") as s:
        yield s


def sized(session, floats: int):
    return session.process(SIZED, cycles=1, inputs={"floats": floats}, progress=False)


def test_a_resent_frames_stream_is_told_from_a_live_results():
    assert kept.kept_nonce(kept.kept_stream("ab12")) == "ab12"
    assert kept.kept_nonce("0123456789ab") is None  # a live result's stream: its query id
    assert kept.kept_nonce("kept/") is None and kept.kept_nonce(None) is None
    assert kept.valid_nonce("ab12") and not kept.valid_nonce("a/b") and not kept.valid_nonce("")
    assert kept.within(0) == kept.BASE_WITHIN < kept.within(100_000_000)


@pytest.mark.parametrize(("connection", "floats"), [("callback", 2 * MB64), ("dial", MB64)])
def test_a_large_result_is_fetched_whole_after_detach_and_reattach(daemon, connection, floats):
    """128 MB (dialled back) and 64 MB (the client dials the session's outbox). Fetched as
    one control reply, 64 MB took 5 s (at the edge of a request attempt: under load, it
    never came) and 128 MB never came in 60 s; on the data plane, about 0.25 s and 0.5 s."""
    session = pyproof.connect(f"{daemon.url}?workers=1&connection={connection}")
    live = sized(session, floats)
    assert live.outputs["big"].nbytes == floats * 8
    session_id = session.detach()
    with pyproof.connect(f"{daemon.url}?connection={connection}", session=session_id) as again:
        t0 = time.monotonic()
        fetched = again.result(live.query)
        seconds = time.monotonic() - t0
        assert np.array_equal(fetched.outputs["big"], live.outputs["big"])
        assert fetched.outputs["count"] == live.outputs["count"] == 1
        assert fetched.stats.entries == live.stats.entries
        # it came on the data plane, in chunks (the control reply carried no frame)
        assert again._reassembler.statistics().messages_completed >= 1
        assert seconds < kept.within(floats * 8), seconds
        # asked again: the result this client holds now, at once
        assert np.array_equal(again.result(live.query).outputs["big"], live.outputs["big"])


def test_an_unknown_query_id_is_a_clear_error_and_the_session_goes_on(lite):
    with pytest.raises(QueryError, match=r"keeps no result of query 'nosuchquery': it never ran "
                                         r"in this session, has not ended yet .*ended too long "
                                         r"ago \(the results of the last 10 queries are kept\)"):
        lite.result("nosuchquery")
    assert "nosuchquery" not in lite._handles
    assert sized(lite, 10).outputs["count"] == 1
    running = lite.submit("tests.sample_selectors:SlowCycles", cycles=20,
                          inputs={"per_entry": 0.1})
    with pytest.raises(QueryError, match=rf"keeps no result of query '{running.query}'"):
        lite.result(running.query)  # not ended yet: its handle is left as it was
    assert lite._handles[running.query] is running
    assert running.result(timeout=60).outputs["count"] == 20


def test_the_silence_check_fetches_a_lost_final_frame_on_the_data_plane(lite, monkeypatch):
    """The live result was lost on the data plane: after the silence checks the client asks
    for the kept one, which comes on the data plane (a `resend` request), not inline."""
    calls: list[tuple[str, dict]] = []
    call = lite._call
    monkeypatch.setattr(lite, "_call", lambda kind, payload=None, **kw: (
        calls.append((kind, dict(payload or {}))), call(kind, payload, **kw))[1])
    handle = lite.submit(SIZED, cycles=1, inputs={"floats": 3_000_000})  # 24 MB
    deadline = time.monotonic() + 60
    while handle.query not in lite.status()["master"]["results"]:  # sent, not read
        assert time.monotonic() < deadline, "the query did not finish within 60 s"
        time.sleep(0.05)
    lite.data.recv_timeout = 500
    try:  # the frames waiting for the client are lost (read and dropped)
        while True:
            lite.data.recv()
    except pynng.Timeout:
        pass
    result = handle.result(timeout=90)
    assert result.outputs["big"].nbytes == 24_000_000 and result.outputs["count"] == 1
    fetches = [payload for kind, payload in calls if kind == "fetch_result"]
    assert len(fetches) == 1 and fetches[0]["resend"] and fetches[0]["query"] == handle.query
    assert fetches[0]["address"] == lite.data_address


def test_a_resent_frame_is_never_a_second_outcome_of_a_query(lite):
    """Asked for the kept frame while the live one waits on the data plane too (a silence
    check that raced the result): the handle takes the first, drops the second."""
    handle = lite.submit(SIZED, cycles=1, inputs={"floats": 1_000})
    deadline = time.monotonic() + 60
    while handle.query not in lite.status()["master"]["results"]:
        assert time.monotonic() < deadline, "the query did not finish within 60 s"
        time.sleep(0.05)
    lite._ask_kept(handle)
    result = handle.result(timeout=30)
    first = handle._final
    deadline = time.monotonic() + 30
    while lite._kept_asked:  # the other one (kept or live) comes too, and is dropped
        assert time.monotonic() < deadline, "the resent frame did not come"
        lite._pump(handle, None)
    assert handle._final is first and handle.result() is result
    # a resent frame nobody asked for (a request given up on) is dropped unread
    other = lite.submit(SIZED, cycles=1, inputs={"floats": 1_000})
    lite._call("fetch_result", {"query": handle.query, "resend": "notasked",
                                "address": lite.data_address})
    assert other.result(timeout=30).query == other.query
    assert handle._final is first


def test_a_kept_result_that_does_not_come_is_a_clear_error_in_bounded_time(lite, monkeypatch,
                                                                          tmp_path):
    """The master sends the kept frame to a data address nobody listens on: the client
    waits `kept.within(size)` s, then says what happened and what to do."""
    done = sized(lite, 200_000)  # 1.6 MB: over what a control reply may carry
    del lite._handles[done.query]  # as a client that re-attached: it never saw the result
    monkeypatch.setattr(kept, "BASE_WITHIN", 1.0)
    monkeypatch.setattr(lite, "data_address", f"ipc://{tmp_path}/nobody.ipc")
    t0 = time.monotonic()
    with pytest.raises(QueryError, match=(
            rf"^query {done.query}: its kept result \(1\.6 MB\) did not arrive on this "
            rf"client's data connection within 1 s of asking session {lite.id}'s master for "
            rf"it; the master still keeps it: call session.result\('{done.query}'\) again")):
        lite.result(done.query)
    assert time.monotonic() - t0 < 30
    assert lite._kept_asked == {} and lite._reassembler.open_streams() == []
    monkeypatch.undo()
    assert np.array_equal(lite.result(done.query).outputs["big"], done.outputs["big"])


def test_the_master_sends_a_kept_frame_once_per_request_in_sealed_kept_chunks(tmp_path):
    """On a real plane and a client's listening socket: the frame comes as chunks of stream
    `kept/<nonce>` sealed with the session's key; the same request again (a client's retry
    of an unanswered request) is answered without a second send; a new nonce sends anew."""
    from pyproof.actors.master_plane import MasterPlane
    from pyproof.transport import sealing
    from pyproof.transport.frames import CHUNK, Reassembler, decode_frame, encode_frame

    key = b"k" * 32
    plane = MasterPlane(session_id="s1", address=f"ipc://{tmp_path}/master.ipc", data_key=key)
    client = f"ipc://{tmp_path}/client.ipc"
    big = np.arange(2_500_000, dtype=np.float64)  # 20 MB: three chunks
    frame = encode_frame("result", {"query": "q1", "outputs": {"big": big}}, session="s1")
    plane._keep("q1", frame)
    with pynng.Pull0(listen=client, recv_timeout=10_000) as pull:
        try:
            reply = plane.resend_kept("q1", "n1", client)
            assert reply == {"resend": "n1", "bytes": len(frame)}
            assert plane.resend_kept("q1", "n1", client) == reply  # a retry: not sent again
            assert plane.resend_kept("q2", "n2", client)["error"].startswith(
                "session s1 keeps no result of query 'q2'")
            streams, whole = set(), None
            reassembler = Reassembler()
            while whole is None:
                chunk = decode_frame(sealing.unseal(key, pull.recv()))
                assert chunk.type == CHUNK
                streams.add(chunk.payload["stream"])
                whole = reassembler.add(chunk)
            assert streams == {"kept/n1"}
            assert np.array_equal(whole.payload["outputs"]["big"], big)
            pull.recv_timeout = 500
            with pytest.raises(pynng.Timeout):  # the retry sent nothing
                pull.recv()
            plane.resend_kept("q1", "n3", client)  # asked anew: sent anew
            pull.recv_timeout = 10_000
            again = decode_frame(sealing.unseal(key, pull.recv()))
            assert again.payload["stream"] == "kept/n3"
        finally:
            plane.close()
