"""The master's data plane takes large worker requests in chunks, exactly once."""

from __future__ import annotations

import os
import time

import numpy as np
import pynng
import pytest

from pyproof.actors import protocol as p
from pyproof.actors.master_plane import MasterPlane
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import CHUNK, chunk, decode_frame, encode_frame


@pytest.fixture
def plane(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    plane.worker_joined(f"worker-0#{os.getpid()}")
    plane.start_query("q1", QuerySpec(selector="m:S", cycles=1000, packetizer="basic",
                                      packetizer_params={"packet_entries": 1000},
                                      client_address=f"ipc://{tmp_path}/nobody.ipc"))
    with pynng.Req0(dial=address, recv_timeout=5000, send_timeout=5000) as sock:
        yield plane, sock
    plane.close()


def ask(sock, data: bytes) -> tuple[str, dict]:
    sock.send(data)
    frame = decode_frame(sock.recv())
    return frame.type, frame.payload


def wait_for_packet(sock, base) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kind, reply = ask(sock, encode_frame(p.NEXT, {**base, "processed": []}))
        if kind == p.PACKET:
            return reply["packet"]
        time.sleep(0.01)
    raise AssertionError("no packet")


def test_outputs_in_chunks_are_merged_once_even_when_the_last_chunk_comes_twice(plane):
    master, sock = plane
    base = {"worker": "worker-0", "pid": os.getpid(), "query": "q1"}
    packet = wait_for_packet(sock, base)
    big = np.arange(1_500_000, dtype=np.float64)  # 12 MB: two chunks of 8 MiB at most
    whole = encode_frame(p.OUTPUTS, {**base, "packets": [packet["packet_id"]], "files": [],
                                     "processed": [], "outputs": {"big": big}})
    pieces = chunk(whole, 8 * 1024 * 1024)
    assert len(pieces) == 2
    frames = [encode_frame(CHUNK, {"stream": "w0/1", "index": i, "total": 2, "data": piece})
              for i, piece in enumerate(pieces)]
    assert ask(sock, frames[0]) == (p.ACK, {"more": True})
    assert ask(sock, frames[1]) == (p.ACK, {"accepted": True})
    assert ask(sock, frames[1]) == (p.ACK, {"accepted": True})  # a resend: same answer
    assert master.query.settle(5)  # merges run on their own thread
    np.testing.assert_array_equal(master.query.outputs["big"], big)  # merged once
    assert master.query.delivered == 1000


def test_a_malformed_chunk_gets_a_protocol_error_and_the_plane_serves_on(plane):
    _, sock = plane
    kind, reply = ask(sock, encode_frame(CHUNK, {"stream": "x", "index": 5, "total": 2,
                                                 "data": b"z"}))
    assert kind == p.ERROR and "index 5 outside [0, 2)" in reply["reason"]
    base = {"worker": "worker-0", "pid": os.getpid(), "query": "q1"}
    assert wait_for_packet(sock, base)["entry_stop"] == 1000


def test_a_chunk_with_a_non_text_stream_is_a_protocol_error_not_a_failed_query(plane):
    master, sock = plane
    kind, reply = ask(sock, encode_frame(CHUNK, {"stream": [1], "index": 0, "total": 2,
                                                 "data": b"z"}))
    assert kind == p.ERROR and "chunk stream must be non-empty text" in reply["reason"]
    assert master.query.state in ("preparing", "running")


def test_a_lost_workers_partial_stream_is_dropped(plane):
    master, sock = plane
    stream = f"worker-0#{os.getpid()}/q1/1"
    first = encode_frame(CHUNK, {"stream": stream, "index": 0, "total": 2, "data": b"a"})
    assert ask(sock, first) == (p.ACK, {"more": True})
    assert master._reassembler.open_streams() == [stream]
    master.worker_lost(f"worker-0#{os.getpid()}")
    deadline = time.monotonic() + 5
    while master._reassembler.open_streams() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert master._reassembler.open_streams() == []


def test_a_resend_whose_answer_was_forgotten_is_not_merged_again(plane):
    master, sock = plane
    base = {"worker": "worker-0", "pid": os.getpid(), "query": "q1"}
    packet = wait_for_packet(sock, base)
    whole = encode_frame(p.OUTPUTS, {**base, "packets": [packet["packet_id"]], "files": [],
                                     "processed": [], "outputs": {"n": 1}})
    pieces = chunk(whole, len(whole) // 2 + 1)
    frames = [encode_frame(CHUNK, {"stream": "w0/2", "index": i, "total": 2, "data": piece})
              for i, piece in enumerate(pieces)]
    assert ask(sock, frames[0]) == (p.ACK, {"more": True})
    assert ask(sock, frames[1]) == (p.ACK, {"accepted": True})
    master._chunk_answers.clear()  # as if a thousand other streams had come since
    assert ask(sock, frames[1]) == (p.ACK, {"accepted": False})
    assert master.query.outputs == {"n": 1}
