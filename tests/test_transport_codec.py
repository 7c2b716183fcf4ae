"""The wire codec: round trips for every tag, exact errors, fuzzing."""

from __future__ import annotations

import collections

import boost_histogram as bh
import hist
import numpy as np
import pytest

from pyproof.transport.codec import EncodeError, ProtocolError, RemoteError, decode, encode


def roundtrip(value: object) -> object:
    return decode(encode(value))


def test_nested_plain_values_round_trip_with_tuples_and_counters() -> None:
    value = {
        "a": (1, (2, [3, {"k": [4]}])),
        "c": collections.Counter({(1, 2): 2}),
        (1, 2): {1, 2},
        "t": (collections.Counter(a=1), b"x", None, 1.5, 2**80),
    }
    out = roundtrip(value)
    assert out == value
    assert type(out["a"][1][1]) is list
    assert type(out["c"]) is collections.Counter


def test_ndarray_round_trips_dtype_shape_and_is_writable() -> None:
    array = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    out = roundtrip(array)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    out[0, 0] = 7


def test_hist_round_trips_as_hist_with_names_and_storage() -> None:
    h = hist.Hist(
        hist.axis.Regular(3, 0, 1, name="x", label="X [GeV]"),
        hist.axis.StrCategory(["a", "b"], name="c", growth=True),
        storage=hist.storage.Weight(),
        name="h",
        metadata={"run": [1, 2]},
    )
    h.fill(x=[0.1, 0.5], c=["a", "b"], weight=[2, 3])
    out = roundtrip(h)
    assert type(out) is hist.Hist
    assert out == h
    assert out.metadata == {"run": [1, 2]}


def test_remote_error_round_trips() -> None:
    error = RemoteError.from_exception(ZeroDivisionError("division by zero"), worker="worker-3")
    assert roundtrip(error) == error


def test_encode_error_names_the_path() -> None:
    class Foo:
        pass

    with pytest.raises(
        EncodeError, match=r"^inputs\['cut'\]\[2\]: cannot encode object of type 'Foo'$"
    ):
        encode({"inputs": {"cut": [1, 2, Foo()]}})


def test_decode_refuses_trailing_bytes() -> None:
    with pytest.raises(
        ProtocolError, match=r"^1 trailing bytes after a complete CBOR item of 1 bytes$"
    ):
        decode(b"\x01\x02")


def test_histogram_class_is_kept() -> None:
    h = bh.Histogram(bh.axis.Integer(0, 3))
    assert type(roundtrip(h)) is bh.Histogram
