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


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_large_byte_strings_travel_out_of_band_and_come_back_as_bytes(kind):
    raw = bytes(range(256)) * (OOB_THRESHOLD // 256 + 3)
    data = encode_frame("data", {"blob": kind(raw), "small": kind(b"abc")})
    assert data[:4] == OOB_MAGIC
    assert len(data) < len(raw) + 200  # the blob is in the frame once, not CBOR-escaped
    payload = decode_frame(data).payload
    assert type(payload["blob"]) is bytes and payload["blob"] == raw
    assert payload["small"] == b"abc"


def test_a_strided_memoryview_is_sent_inline_with_its_own_bytes():
    raw = bytes(range(256)) * (OOB_THRESHOLD // 128 + 3)
    strided = memoryview(raw)[::2]
    assert decode_frame(encode_frame("data", strided)).payload == raw[::2]


def test_a_bytes_reference_outside_a_buffered_frame_or_past_its_buffers_is_refused():
    import cbor2

    from pyproof.transport.codec import TAG_BYTES_REF, decode

    with pytest.raises(ProtocolError, match="outside a frame"):
        decode(cbor2.dumps(cbor2.CBORTag(TAG_BYTES_REF, 0)))
    data = bytearray(encode_frame("data", {"a": b"x" * OOB_THRESHOLD, "b": b"y" * OOB_THRESHOLD}))
    # point the second reference at buffer 7, which does not exist
    at = bytes(data).index(cbor2.dumps(cbor2.CBORTag(TAG_BYTES_REF, 1)))
    data[at:at + len(cbor2.dumps(cbor2.CBORTag(TAG_BYTES_REF, 7)))] = cbor2.dumps(
        cbor2.CBORTag(TAG_BYTES_REF, 7))
    with pytest.raises(ProtocolError, match="no out-of-band buffer 7"):
        decode_frame(bytes(data))


def test_sealing_the_parts_equals_sealing_the_joined_frame():
    from pyproof.transport import sealing
    from pyproof.transport.frames import frame_parts

    key = b"k" * 32
    payload = {"a": big(), "b": b"z" * OOB_THRESHOLD, "c": 1}
    wire = sealing.seal_parts(key, frame_parts("result", payload, session="s1"))
    assert wire == sealing.seal(key, encode_frame("result", payload, session="s1"))
    assert wire == sealing.seal_parts(key, frame_parts("result", payload, session="s1"))
    assert decode_frame(sealing.unseal(key, wire)).payload["b"] == payload["b"]
    with pytest.raises(sealing.SealError):
        sealing.unseal(b"q" * 32, wire)


sizes = st.sampled_from([0, 1, OOB_THRESHOLD - 1, OOB_THRESHOLD, OOB_THRESHOLD + 7])
blobs = sizes.flatmap(lambda n: st.just(bytes(range(256)) * (n // 256) + b"\x07" * (n % 256)))
arrays = sizes.map(lambda n: np.arange(n // 8 + 1, dtype=np.float64))
oob_values = st.recursive(
    blobs | arrays | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=8,
)


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(oob_values)
def test_any_mix_of_large_and_small_arrays_and_bytes_round_trips(value):
    from pyproof.transport import sealing
    from pyproof.transport.frames import frame_parts

    key = b"k" * 32
    wire = sealing.seal_parts(key, frame_parts("data", value, request_id="r"))
    assert same(decode_frame(sealing.unseal(key, wire)).payload, value)


def test_a_buffer_referred_to_twice_or_never_is_refused():
    """A small frame naming one buffer many times must not decode into gigabytes."""
    import cbor2

    from pyproof.transport.codec import TAG_BYTES_REF
    from pyproof.transport.frames import _OOB_HEAD, _OOB_SIZE

    def frame(item_value, buffers):
        item = cbor2.dumps({"version": 1, "type": "data", "session": None,
                            "request_id": None, "payload": item_value})
        parts = [_OOB_HEAD.pack(OOB_MAGIC, len(item), len(buffers)), item]
        for buffer in buffers:
            parts += [_OOB_SIZE.pack(len(buffer)), buffer]
        return b"".join(parts)

    ref = cbor2.CBORTag(TAG_BYTES_REF, 0)
    with pytest.raises(ProtocolError, match="buffer 0 referred to twice"):
        decode_frame(frame([ref] * 2000, [b"x" * 1024]))
    with pytest.raises(ProtocolError, match="1 out-of-band buffer"):
        decode_frame(frame([ref], [b"x", b"y"]))
    assert decode_frame(frame([ref], [b"x"])).payload == [b"x"]
