"""wire.send_parts / recv_view: one copy of each part in, nng's buffer read in place."""

from __future__ import annotations

import gc

import numpy as np
import pynng
import pytest

from pyproof.transport import sealing
from pyproof.transport.frames import decode_frame, frame_parts
from pyproof.transport.wire import SMALL, recv_view, send_parts


@pytest.fixture
def pair(tmp_path):
    address = f"ipc://{tmp_path}/wire.sock"
    with pynng.Pair0(listen=address, recv_timeout=5000, recv_max_size=0) as a, \
            pynng.Pair0(dial=address, recv_timeout=5000, send_timeout=5000,
                        recv_max_size=0) as b:
        yield a, b


@pytest.mark.parametrize("sizes", [[0], [3, 0, 5], [SMALL - 1], [SMALL], [10, SMALL * 3, 7]])
def test_parts_arrive_as_their_concatenation(pair, sizes):
    a, b = pair
    parts = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    parts[-1] = memoryview(parts[-1])  # views are sent as well as bytes
    send_parts(a, parts)
    received = recv_view(b)
    assert bytes(received) == b"".join(bytes(p) for p in parts)
    assert isinstance(received, bytes if sum(sizes) < SMALL else memoryview)


def test_a_large_view_outlives_collection_of_everything_else(pair):
    a, b = pair
    data = np.arange(SMALL, dtype=np.int64)
    send_parts(a, [b"head", memoryview(data).cast("B")])
    view = recv_view(b)[4:]  # a slice keeps the message alive, like unseal's
    gc.collect()
    send_parts(a, [b"x" * (SMALL * 2)])  # nng reuses freed memory quickly
    other = recv_view(b)
    assert np.array_equal(np.frombuffer(view, dtype=np.int64), data)
    assert view.readonly
    del other


def test_a_sealed_array_frame_round_trips_through_the_wire(pair):
    a, b = pair
    key = b"k" * 32
    array = np.random.default_rng(2).random(100_000)
    send_parts(a, sealing.sealed_parts(key, frame_parts("result", {"h": array}, session="s")))
    frame = decode_frame(sealing.unseal(key, recv_view(b)))
    assert np.array_equal(frame.payload["h"], array) and frame.session == "s"
    frame.payload["h"][0] = 1.0  # the receiver's own copy


def test_non_blocking_send_without_a_peer_says_try_again():
    with pynng.Push0() as lonely:
        for size in (10, SMALL * 2):
            with pytest.raises(pynng.TryAgain):
                send_parts(lonely, [b"x" * size], block=False)


def test_receive_timeout_is_the_sockets(pair):
    _, b = pair
    b.recv_timeout = 50
    with pytest.raises(pynng.Timeout):
        recv_view(b)
