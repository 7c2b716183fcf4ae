"""Large arrays travel out of band: exact round trips, and malformed frames refused."""

from __future__ import annotations

import hist
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import OOB_MAGIC, OOB_THRESHOLD, decode_frame, encode_frame


def big(n: int = OOB_THRESHOLD // 8 + 1, dtype=np.float64) -> np.ndarray:
    return (np.arange(n) * 3).astype(dtype)


def test_large_arrays_travel_out_of_band_and_round_trip_exactly():
    h = hist.Hist.new.Reg(20000, 0, 1, name="x").Weight()
    h.fill(np.linspace(0, 1, 5000), weight=2.0)
    payload = {"a": big(), "nested": [big(20000, np.int32), {"small": np.arange(3)}],
               "h": h, "t": np.asfortranarray(np.ones((300, 100)))}
    data = encode_frame("result", payload)
    assert data[:4] == OOB_MAGIC
    frame = decode_frame(data)
    out = frame.payload
    np.testing.assert_array_equal(out["a"], payload["a"])
    np.testing.assert_array_equal(out["nested"][0], payload["nested"][0])
    assert out["nested"][0].dtype == np.int32
    np.testing.assert_array_equal(out["nested"][1]["small"], [0, 1, 2])
    np.testing.assert_array_equal(out["t"], payload["t"])
    assert out["h"] == h
    out["a"][0] = 42.0  # decoded arrays are the receiver's own, writable


def test_small_payloads_stay_plain_cbor():
    assert encode_frame("progress", {"a": np.arange(10)})[:4] != OOB_MAGIC


def test_every_truncation_of_an_out_of_band_frame_is_refused():
    data = encode_frame("result", {"a": big()})
    for cut in [0, 3, 4, 10, 16, 17, 40, len(data) // 2, len(data) - 1]:
        with pytest.raises(ProtocolError):
            decode_frame(data[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_the_magic_are_refused(tail):
    with pytest.raises(ProtocolError):
        decode_frame(OOB_MAGIC + tail)


def test_a_reference_to_a_missing_buffer_is_refused():
    data = bytearray(encode_frame("result", {"a": big()}))
    data[12:16] = (0).to_bytes(4, "little")  # claim no buffers: the bytes are trailing
    with pytest.raises(ProtocolError):
        decode_frame(bytes(data))
