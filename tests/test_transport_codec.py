"""The wire codec: round trips for every tag, exact error messages, fuzzing."""

from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import os
import re
import subprocess
import sys
import uuid

import awkward as ak
import boost_histogram as bh
import cbor2
import hist
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyproof.datasets.records import FileRecord
from pyproof.transport import codec
from pyproof.transport.codec import (
    DEFAULT_MAX_FRAME,
    TAG_COUNTER,
    TAG_DATASET_RECORD,
    TAG_HISTOGRAM,
    TAG_NDARRAY,
    TAG_REMOTE_ERROR,
    TAG_TUPLE,
    EncodeError,
    ProtocolError,
    RemoteError,
    decode,
    encode,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OUR_TAGS = [TAG_TUPLE, TAG_COUNTER, TAG_NDARRAY, TAG_HISTOGRAM, TAG_REMOTE_ERROR,
            TAG_DATASET_RECORD, codec.TAG_AWKWARD]


def message_id(value: object) -> str:
    """Readable test ids for (data, message) parameters: the message, squeezed."""
    return re.sub(r"\W+", "-", value).strip("-")[:60] if isinstance(value, str) else "-"


def roundtrip(value: object) -> object:
    return decode(encode(value))


def tagged(tag: int, payload: object) -> bytes:
    """Raw CBOR for a tag with any payload, bypassing our encoder's checks."""
    return cbor2.dumps(cbor2.CBORTag(tag, payload))


class Foo:
    pass


# ------------------------------------------------------------------ plain values

hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=5,
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | hashables, st.integers(), max_size=4).map(
            collections.Counter
        )
        | st.sets(hashables, max_size=4)
    ),
    max_leaves=25,
)


def same_types(a: object, b: object) -> bool:
    """Equality that also insists on the container types (tuple vs list etc.)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_types(a[k], b[k]) for k in a)
    return a == b


@FAST
@given(values)
def test_nested_values_round_trip_with_their_container_types(value: object) -> None:
    assert same_types(roundtrip(value), value)


def test_nested_tuples_lists_and_counters_keep_their_types_inside_tags() -> None:
    value = {
        "a": (1, (2, [3, {"k": [4]}])),
        "c": collections.Counter({(1, 2): 2}),
        (1, (2, 3)): {1, 2},
        "t": (collections.Counter(a=1), {"x": [1]}, {frozenset({1})}),
    }
    out = roundtrip(value)
    assert same_types(out, value)
    # a tuple used as a key is a tuple subclass (cbor2 builds keys immutably)
    key = next(k for k in out if isinstance(k, tuple))
    assert key == (1, (2, 3)) and hash(key) == hash((1, (2, 3)))
    assert type(key[1]) is tuple
    assert encode(out) == encode(value)


def test_numpy_scalars_encode_as_plain_numbers() -> None:
    scalars = [np.bool_(True), np.int8(-3), np.uint64(2**64 - 1), np.float32(1.5), np.float16(2)]
    out = roundtrip(scalars)
    assert out == [True, -3, 2**64 - 1, 1.5, 2.0]
    assert [type(x) for x in out] == [bool, int, int, float, float]
    assert encode(np.float64(0.25)) == encode(0.25)
    assert roundtrip(np.complex64(1j)) == 1j


def test_bytes_like_values_travel_as_bytes_and_dict_subclasses_as_dicts() -> None:
    value = [bytearray(b"ab"), memoryview(b"cd"), collections.OrderedDict(a=1)]
    assert same_types(roundtrip(value), [b"ab", b"cd", {"a": 1}])


def test_aware_datetimes_round_trip() -> None:
    when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    assert roundtrip({"t": when, "d": when.date()}) == {"t": when, "d": when.date()}


def test_nan_round_trips() -> None:
    assert np.isnan(roundtrip(float("nan")))


# ------------------------------------------------------------------------ arrays

dtypes = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.integer_dtypes(endianness=">")
    | hnp.unsigned_integer_dtypes(endianness="?")
    | hnp.floating_dtypes(endianness="?")
    | hnp.complex_number_dtypes(endianness="?")
    | hnp.datetime64_dtypes(endianness="?")
    | hnp.timedelta64_dtypes(endianness="?")
    | hnp.byte_string_dtypes(max_len=4)
    | hnp.unicode_string_dtypes(endianness="?", max_len=4)
)
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
)


def assert_same_array(out: object, array: np.ndarray) -> None:
    assert type(out) is np.ndarray
    assert out.dtype == array.dtype and out.dtype.str == array.dtype.str
    assert out.shape == array.shape
    # bytes, not ==: NaN, NaT and -0.0 must survive exactly
    assert out.tobytes() == np.ascontiguousarray(array).tobytes()
    assert out.flags.writeable and out.flags.c_contiguous


@FAST
@given(arrays)
def test_arrays_of_any_dtype_and_shape_round_trip(array: np.ndarray) -> None:
    assert_same_array(roundtrip(array), array)


@FAST
@given(arrays.filter(lambda a: a.ndim >= 1), st.integers(1, 3), st.booleans())
def test_non_contiguous_arrays_round_trip(array: np.ndarray, step: int, transpose: bool) -> None:
    view = array[::step]
    if transpose:
        view = view.T
    assert_same_array(roundtrip(view), view)


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5),
        np.zeros((0,)),
        np.zeros((3, 0, 2), dtype=">i2"),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array(["a", "bcd"]),
        np.array([np.datetime64("NaT"), np.datetime64("2024-01-01")], dtype="M8[ns]"),
    ],
    ids=["0-d", "empty", "empty-3d-big-endian", "fortran", "unicode", "datetime"],
)
def test_edge_case_arrays_round_trip(array: np.ndarray) -> None:
    assert_same_array(roundtrip({"a": array})["a"], array)


def test_arrays_are_bytes_on_the_wire_not_lists() -> None:
    array = np.arange(1000, dtype="<f8")
    wire = encode(array)
    assert array.tobytes() in wire
    assert len(wire) < array.nbytes + 40


def test_awkward_arrays_round_trip_as_columnar_buffers_not_lists() -> None:
    muons = ak.zip({"pt": ak.Array([[30.5, 20.25], [], [45.0]]),
                    "charge": ak.Array([[1, -1], [], [1]])})
    events = ak.Array({"run": np.arange(3, dtype=np.int64), "Muon": muons,
                       "name": ["a", "bb", None]})
    out = roundtrip({"events": events})["events"]
    assert isinstance(out, ak.Array)
    assert out.tolist() == events.tolist()
    assert str(out.type) == str(events.type)
    pts = np.arange(1000, dtype="<f8")
    wire = encode(ak.Array(pts))
    assert pts.tobytes() in wire and len(wire) < pts.nbytes + 200
    assert ak.to_list(roundtrip(events[1:2])) == events[1:2].tolist()  # a slice is packed


@pytest.mark.parametrize(("payload", "message"), [
    ({"form": "x", "length": 1}, r"^awkward tag: expected a map with keys form, length, "
                                 r"buffers$"),
    ({"form": 1, "length": 1, "buffers": {}}, r"^awkward tag: form must be text"),
    ({"form": '"float64"', "length": -1, "buffers": {}}, r"non-negative integer"),
    ({"form": '{"class": "Nope"}', "length": 1, "buffers": {}}, r"^awkward tag: \w+Error: "),
    ({"form": '"float64"', "length": 5, "buffers": {}}, r"^awkward tag: \w+Error: "),
], ids=["keys", "form-type", "length", "bad-form", "missing-buffer"])
def test_bad_awkward_payloads_get_a_protocol_error(payload: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(tagged(codec.TAG_AWKWARD, payload))


class MyArray(np.ndarray):
    pass


def test_ndarray_subclasses_travel_as_plain_arrays() -> None:
    out = roundtrip(np.array([[1, 2]]).view(MyArray))
    assert type(out) is np.ndarray and out.tolist() == [[1, 2]]


# -------------------------------------------------------------------- histograms

STORAGES = [
    bh.storage.Double,
    bh.storage.Int64,
    bh.storage.AtomicInt64,
    bh.storage.Unlimited,
    bh.storage.Weight,
    bh.storage.Mean,
    bh.storage.WeightedMean,
]


@st.composite
def axes(draw: st.DrawFn, index: int) -> bh.axis.Axis:
    meta = {"name": f"ax{index}", "label": draw(st.sampled_from(["", "p_T [GeV]"]))}
    kind = draw(st.sampled_from(["regular", "log", "variable", "integer", "int", "str", "bool"]))
    flows = {"underflow": draw(st.booleans()), "overflow": draw(st.booleans())}
    growth = draw(st.booleans())
    if kind == "regular":
        axis = bh.axis.Regular(draw(st.integers(1, 5)), -1.0, 2.0, **flows, __dict__=meta)
    elif kind == "log":
        axis = bh.axis.Regular(3, 1.0, 100.0, transform=bh.axis.transform.log, __dict__=meta)
    elif kind == "variable":
        edges = sorted(draw(st.sets(st.integers(-5, 5), min_size=2, max_size=5)))
        axis = bh.axis.Variable(edges, **flows, __dict__=meta)
    elif kind == "integer":
        axis = bh.axis.Integer(-1, draw(st.integers(0, 4)), **flows, __dict__=meta)
    elif kind == "int":
        cats = sorted(draw(st.sets(st.integers(-3, 9), max_size=4)) or {0})
        axis = bh.axis.IntCategory(cats, growth=growth, __dict__=meta)
    elif kind == "str":
        cats = sorted(draw(st.sets(st.sampled_from("abcdef"), max_size=4)) or {"a"})
        axis = bh.axis.StrCategory(cats, growth=growth, __dict__=meta)
    else:
        axis = bh.axis.Boolean(__dict__=meta)
    return axis


def sample_for(axis: bh.axis.Axis, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(axis, bh.axis.StrCategory):
        return rng.choice(list("abcdefg"), n)
    if isinstance(axis, bh.axis.IntCategory):
        return rng.integers(-3, 10, n)
    if isinstance(axis, bh.axis.Boolean):
        return rng.integers(0, 2, n).astype(bool)
    if isinstance(axis, bh.axis.Integer):
        return rng.integers(-3, 8, n)
    return rng.uniform(-3, 105, n)


@st.composite
def histograms(draw: st.DrawFn) -> bh.Histogram:
    hist_axes = [draw(axes(i)) for i in range(draw(st.integers(1, 3)))]
    storage = draw(st.sampled_from(STORAGES))()
    cls = draw(st.sampled_from([bh.Histogram, hist.Hist]))
    h = bh.Histogram(*hist_axes, storage=storage)
    if cls is hist.Hist:
        h = hist.Hist(h, name="h", label="counts", metadata={"run": [1, 2], "cut": (1, 2)})
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    n = draw(st.integers(0, 30))
    data = [sample_for(ax, rng, n) for ax in h.axes]
    kwargs = {}
    if isinstance(storage, (bh.storage.Mean, bh.storage.WeightedMean)):
        kwargs["sample"] = rng.normal(size=n)
    if isinstance(storage, (bh.storage.Weight, bh.storage.WeightedMean)):
        kwargs["weight"] = rng.uniform(0.5, 2, n)
    h.fill(*data, **kwargs)
    return h


def assert_same_histogram(out: object, h: bh.Histogram) -> None:
    assert type(out) is type(h)
    assert out.storage_type is h.storage_type
    assert [type(a) for a in out.axes] == [type(a) for a in h.axes]
    assert [a.__dict__ for a in out.axes] == [a.__dict__ for a in h.axes]
    assert [a.traits for a in out.axes] == [a.traits for a in h.axes]
    assert out.__dict__ == h.__dict__
    view, expected = np.asarray(out.view(flow=True)), np.asarray(h.view(flow=True))
    assert view.tobytes() == expected.tobytes()  # exact, NaN included
    fields = [expected[name] for name in expected.dtype.names or ()] or [expected]
    if not any(np.isnan(field).any() for field in fields if field.dtype.kind == "f"):
        assert out == h


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histograms())
def test_histograms_round_trip_with_class_axes_metadata_and_storage(h: bh.Histogram) -> None:
    assert_same_histogram(roundtrip({"h": h})["h"], h)


def test_weighted_mean_round_trips_exactly_even_where_uhi_loses_variance() -> None:
    h = bh.Histogram(bh.axis.Integer(0, 2), storage=bh.storage.WeightedMean())
    h.fill([0, 1, 1], sample=[1.0, 2.0, 4.0], weight=[1.0, 2.0, 3.0])
    out = roundtrip(h)
    assert out == h
    assert_same_histogram(out, h)


def test_named_hist_round_trips_as_named_hist() -> None:
    h = hist.NamedHist(hist.axis.Regular(2, 0, 1, name="x"), hist.axis.Boolean(name="b"))
    h.fill(x=[0.5, 0.7], b=[True, False])
    out = roundtrip(h)
    assert type(out) is hist.NamedHist and out == h


def test_histogram_arrays_go_through_the_ndarray_tag() -> None:
    h = bh.Histogram(bh.axis.Regular(4, 0, 1))
    payload = cbor2.loads(encode(h), tag_hook=lambda tag, _: (tag.tag, tag.value))
    assert payload[0] == TAG_HISTOGRAM
    assert payload[1]["data"][0] == TAG_NDARRAY


# ------------------------------------------------------------------- RemoteError


def raise_and_capture() -> RemoteError:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        return RemoteError.from_exception(
            exc,
            file="/data/run1.root",
            tree="Events",
            entry_start=1000,
            entry_stop=2000,
            worker="worker-3",
            cuts=[1, 2],
        )
    raise AssertionError("unreachable")


def test_remote_error_from_exception_captures_type_message_traceback_and_context() -> None:
    error = raise_and_capture()
    assert error.type == "ZeroDivisionError"
    assert error.message == "division by zero"
    assert "in raise_and_capture" in error.traceback
    assert error.context["entry_start"] == 1000
    assert roundtrip({"error": error}) == {"error": error}


def test_remote_error_names_non_builtin_exceptions_with_their_module() -> None:
    error = RemoteError.from_exception(decimal.InvalidOperation("bad"))
    assert error.type == "decimal.InvalidOperation"
    assert error.traceback == "decimal.InvalidOperation: bad\n"


def test_remote_error_reads_well() -> None:
    error = RemoteError(
        type="ZeroDivisionError",
        message="division by zero",
        traceback='Traceback (most recent call last):\n  File "sel.py", line 3\nZeroDivisionError',
        context={
            "file": "/data/run1.root",
            "tree": "Events",
            "entry_start": 1000,
            "entry_stop": 2000,
            "worker": "worker-3",
            "attempt": 2,
        },
    )
    assert str(error) == (
        "ZeroDivisionError: division by zero\n"
        "  in file /data/run1.root, tree Events, entries [1000, 2000), on worker-3, attempt=2\n"
        "\n"
        "Remote traceback:\n"
        "  Traceback (most recent call last):\n"
        '    File "sel.py", line 3\n'
        "  ZeroDivisionError"
    )
    assert str(RemoteError(type="KeyError", message="")) == "KeyError"


def test_remote_error_is_frozen() -> None:
    error = RemoteError(type="E", message="m")
    with pytest.raises(AttributeError):
        error.type = "F"  # type: ignore[misc]


# ------------------------------------------------------------------ encode errors


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"inputs": {"cut": [1, 2, Foo()]}},
            r"^inputs\['cut'\]\[2\]: cannot encode object of type 'Foo'$",
        ),
        (Foo(), r"^cannot encode object of type 'Foo'$"),
        ([(1, Foo())], r"^\[0\]\[1\]: cannot encode object of type 'Foo'$"),
        ({"a b": {3: Foo()}}, r"^\['a b'\]\[3\]: cannot encode object of type 'Foo'$"),
        ([{Foo(): 1}], r"^\[0\] \(a map key\): cannot encode object of type 'Foo'$"),
        ({"s": {Foo()}}, r"^s \(a set element\): cannot encode object of type 'Foo'$"),
        ({"u": uuid.UUID(int=1)}, r"^u: cannot encode object of type 'UUID'$"),
        ({"d": decimal.Decimal(1)}, r"^d: cannot encode object of type 'Decimal'$"),
        ({"t": cbor2.CBORTag(TAG_NDARRAY, 1)}, r"^t: cannot encode object of type 'CBORTag'$"),
        ({"n": np.datetime64("2024")}, r"^n: cannot encode object of type 'datetime64'$"),
        (
            {"t": datetime.datetime(2024, 1, 1)},
            r"^t: naive datetime encountered and no default timezone has been set$",
        ),
        (
            {"a": np.array([None])},
            r"^a: cannot encode ndarray of dtype object "
            r"\(object arrays hold Python objects; use a numeric or string dtype\)$",
        ),
        (
            {"a": np.zeros(2, dtype=[("x", "f8"), ("y", "i4")])},
            r"^a: cannot encode ndarray of structured dtype \[\('x', '<f8'\), \('y', '<i4'\)\] "
            r"\(send one array per field\)$",
        ),
        (
            {"a": np.ma.masked_array([1, 2], mask=[0, 1])},
            r"^a: cannot encode a masked array \(send \.filled\(\) and the mask as two arrays\)$",
        ),
        (
            {"e": RemoteError(type="E", message="m", context={"x": Foo()})},
            r"^e\.context\['x'\]: cannot encode object of type 'Foo'$",
        ),
        (
            {"h": hist.Hist(hist.axis.Regular(2, 0, 1), metadata=Foo())},
            r"^h\.metadata: cannot encode object of type 'Foo'$",
        ),
        (
            {"h": bh.Histogram(bh.axis.Regular(2, 0, 1, __dict__={"unit": Foo()}))},
            r"^h\.axes\[0\]\.unit: cannot encode object of type 'Foo'$",
        ),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else "",
)
def test_encode_error_names_where_the_bad_value_is(value: object, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode(value)


def test_encode_error_names_a_cycle() -> None:
    value: dict = {"a": []}
    value["a"].append(value)
    with pytest.raises(
        EncodeError, match=r"^a\[0\]: cyclic reference \(the structure contains itself\)$"
    ):
        encode(value)


DEEP = """
from pyproof.transport.codec import EncodeError, encode
for depth in (2_000, 100_000):
    for wrap in (lambda x: [x], lambda x: {"k": x}):
        value = 1
        for _ in range(depth):
            value = wrap(value)
        try:
            encode(value)
        except EncodeError as exc:
            print(exc)
"""


def test_deep_nesting_is_an_encode_error_not_a_crash() -> None:
    # cbor2 6.3's native encoder segfaults on ~20k-deep lists: run it apart
    done = subprocess.run(
        [sys.executable, "-c", DEEP],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == 4 * [
        "structure is nested too deeply to encode (decode accepts 400 levels)"
    ]


def test_nesting_deeper_than_400_levels_is_refused_by_decode() -> None:
    value: object = 1
    for _ in range(401):
        value = [value]
    with pytest.raises(
        ProtocolError, match=r"^malformed CBOR: maximum container nesting depth \(400\) exceeded$"
    ):
        decode(encode(value))


def test_a_value_shared_in_two_places_is_not_a_cycle() -> None:
    shared = [1]
    assert roundtrip([shared, shared]) == [[1], [1]]


def test_encode_error_is_a_type_error() -> None:
    assert issubclass(EncodeError, TypeError)
    assert issubclass(ProtocolError, ValueError)


# ---------------------------------------------------------------- decode errors


def test_oversize_is_refused_before_decoding() -> None:
    data = encode(list(range(100)))
    with pytest.raises(
        ProtocolError, match=rf"^frame of {len(data)} bytes exceeds the limit of 10 bytes$"
    ):
        decode(data, max_size=10)
    assert decode(data, max_size=len(data)) == list(range(100))
    assert DEFAULT_MAX_FRAME == 256 * 1024 * 1024


def test_oversize_check_does_not_look_at_the_bytes() -> None:
    # garbage that would be a decode error if it were read
    with pytest.raises(ProtocolError, match=r"^frame of 5 bytes exceeds the limit of 4 bytes$"):
        decode(b"\xff" * 5, max_size=4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^truncated CBOR data \(0 bytes\)$"),
        (b"\x82\x01", r"^truncated CBOR data \(2 bytes\)$"),
        (b"\x01\x02", r"^1 trailing bytes after a complete CBOR item of 1 bytes$"),
        (b"\xa1\x01", r"^truncated CBOR data \(2 bytes\)$"),
        (b"\xff", r"^malformed CBOR: .+$"),
        (b"\x62\xff\xfe", r"^malformed CBOR: .+$"),
        (b"\x81" * 500 + b"\x01", r"^malformed CBOR: .*depth.*$"),
        (tagged(12345, 1), r"^unknown CBOR tag 12345$"),
        (tagged(TAG_DATASET_RECORD, {}),
         r"^dataset record tag: a file record must be a map with at least a url$"),
        (tagged(TAG_DATASET_RECORD, {"url": "/a", "entries": "5"}),
         r"^dataset record tag: file record field 'entries' cannot be str$"),
        (tagged(TAG_DATASET_RECORD, {"url": "/a", "owner": "x"}),
         r"^dataset record tag: file record has unknown field 'owner'$"),
        (tagged(TAG_DATASET_RECORD, {"url": "/a", "trees": [["t"]]}),
         r"^dataset record tag: file record field 'trees' must hold \[name, entries\] pairs$"),
        (tagged(35, "a+"), r"^CBOR tag 35 \(regular expression\) is not allowed on the wire$"),
        (tagged(37, b"x" * 16), r"^CBOR tag 37 \(UUID\) is not allowed on the wire$"),
        (tagged(28, [1]), r"^CBOR tag 28 \(shared value\) is not allowed on the wire$"),
        (tagged(TAG_TUPLE, 1), r"^tuple tag: expected an array, got integer$"),
        (tagged(TAG_COUNTER, [1]), r"^Counter tag: expected a map, got array of 1$"),
        (tagged(TAG_NDARRAY, 1), r"^ndarray tag: expected \[dtype, shape, data\], got integer$"),
        (
            tagged(TAG_NDARRAY, ["<f8", [1]]),
            r"^ndarray tag: expected \[dtype, shape, data\], got array of 2$",
        ),
        (
            tagged(TAG_NDARRAY, [1, [1], b""]),
            r"^ndarray tag: expected \[dtype, shape, data\] as \[text, array, bytes\], "
            r"got \[integer, array of 1, bytes\]$",
        ),
        (tagged(TAG_NDARRAY, ["nope", [], b""]), r"^ndarray tag: bad dtype 'nope'$"),
        (tagged(TAG_NDARRAY, ["|O", [1], b"x" * 8]), r"^ndarray tag: dtype '\|O' is not allowed$"),
        (tagged(TAG_NDARRAY, ["f8", [1], b"x" * 8]), r"^ndarray tag: dtype 'f8' is not allowed$"),
        (
            tagged(TAG_NDARRAY, ["i4,f8", [1], b"x" * 12]),
            r"^ndarray tag: dtype 'i4,f8' is not allowed$",
        ),
        (tagged(TAG_NDARRAY, ["|V0", [1], b""]), r"^ndarray tag: dtype '\|V0' is not allowed$"),
        (tagged(TAG_NDARRAY, ["<f8", [-1], b""]), r"^ndarray tag: bad shape \(-1,\)$"),
        (tagged(TAG_NDARRAY, ["<f8", [True], b"x" * 8]), r"^ndarray tag: bad shape \(True,\)$"),
        (tagged(TAG_NDARRAY, ["<f8", 3, b""]), r"^ndarray tag: bad shape 3$"),
        (tagged(TAG_NDARRAY, ["<f8", [0] * 65, b""]), r"^ndarray tag: bad shape \(0, .*\)$"),
        (
            tagged(TAG_NDARRAY, ["<f8", [2, 3], b"x" * 47]),
            r"^ndarray tag: shape \(2, 3\) of <f8 needs 48 bytes, got 47$",
        ),
        (
            tagged(TAG_NDARRAY, ["<f8", [2**40, 2**40], b""]),
            r"^ndarray tag: shape \(1099511627776, 1099511627776\) of <f8 needs "
            r"9671406556917033397649408 bytes, got 0$",
        ),
        (
            tagged(TAG_REMOTE_ERROR, {"type": "E"}),
            r"^RemoteError tag: expected a map with keys type, message, traceback, context$",
        ),
        (
            tagged(TAG_REMOTE_ERROR, {"type": 1, "message": "", "traceback": "", "context": {}}),
            r"^RemoteError tag: type must be str, got integer$",
        ),
        (
            tagged(TAG_REMOTE_ERROR, {"type": "E", "message": "", "traceback": "", "context": []}),
            r"^RemoteError tag: context must be dict, got array of 0$",
        ),
        (
            tagged(
                TAG_REMOTE_ERROR, {"type": "E", "message": "", "traceback": "", "context": {1: 2}}
            ),
            r"^RemoteError tag: context keys must be text$",
        ),
        (
            b"\xa1" + tagged(TAG_COUNTER, {}) + b"\x01",
            r"^malformed CBOR: error decoding map \(TypeError: unhashable type: 'Counter'\)$",
        ),
    ],
    ids=message_id,
)
def test_malformed_data_gets_a_protocol_error_that_says_what(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(data)


def hist_payload(**changes: object) -> dict:
    """The histogram tag payload of a small valid histogram, with changes."""
    h = bh.Histogram(bh.axis.Regular(2, 0, 1), bh.axis.StrCategory(["a"]))
    payload = codec._histogram_payload(h, "boost_histogram.Histogram")
    payload = {**payload, **changes}
    return payload


def hist_with_axis(axis: dict, data: np.ndarray | None = None) -> bytes:
    payload = hist_payload()
    payload["uhi"] = {**payload["uhi"], "axes": [axis]}
    payload["data"] = np.zeros(4) if data is None else data
    return encode_raw_hist(payload)


def encode_raw_hist(payload: object) -> bytes:
    return cbor2.dumps(
        cbor2.CBORTag(TAG_HISTOGRAM, payload),
        encoders={k: v for k, v in codec._ENCODERS.items() if k is not cbor2.CBORTag},
        default=codec._default,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            encode_raw_hist([1]),
            r"^histogram tag: expected a map with keys class, uhi, data, got array of 1$",
        ),
        (
            encode_raw_hist({"class": "x"}),
            r"^histogram tag: expected a map with keys class, uhi, data, got \['class'\]$",
        ),
        (
            encode_raw_hist(hist_payload(**{"class": "pickle.loads"})),
            r"^histogram tag: unknown histogram class 'pickle.loads'$",
        ),
        (
            encode_raw_hist(hist_payload(uhi=[])),
            r"^histogram tag: uhi is not a map with an axes array$",
        ),
        (
            hist_with_axis({"type": "polar"}),
            r"^histogram tag: axis 0: unknown axis type 'polar'$",
        ),
        (hist_with_axis(7), r"^histogram tag: axis 0: expected a map, got integer$"),
        (
            # a 10**12-bin axis must be refused before anything is allocated
            hist_with_axis({"type": "regular", "bins": 10**12, "lower": 0, "upper": 1}),
            r"^histogram tag: data shape \(4,\) does not match axes \(1000000000000,\)$",
        ),
        (
            hist_with_axis({"type": "regular", "bins": -3, "lower": 0, "upper": 1}),
            r"^histogram tag: axis 0: bad number of bins -3$",
        ),
        (
            hist_with_axis({"type": "variable", "edges": [1]}),
            r"^histogram tag: axis 0: edges is not an array of at least two numbers$",
        ),
        (
            hist_with_axis({"type": "category_str", "categories": "abc", "flow": False}),
            r"^histogram tag: axis 0: categories is not an array$",
        ),
        (
            hist_with_axis(
                {
                    "type": "regular",
                    "bins": 2,
                    "lower": 0,
                    "upper": 0,
                    "underflow": True,
                    "overflow": True,
                    "circular": False,
                }
            ),
            r"^histogram tag: ValueError: range of axis is zero$",
        ),
        (
            hist_with_axis(
                {
                    "type": "regular",
                    "bins": 4,
                    "lower": 0,
                    "upper": 1,
                    "underflow": False,
                    "overflow": False,
                    "circular": False,
                },
                data={"value": np.zeros(4)},
            ),
            r"^histogram tag: ValueError: double storage needs one data array$",
        ),
        (
            encode_raw_hist(hist_payload(data="zeros")),
            r"^histogram tag: data shape text does not match axes \(4, 2\)$",
        ),
        (
            encode_raw_hist(hist_payload(data={"value": np.zeros((4, 2))})),
            r"^histogram tag: ValueError: double storage needs one data array$",
        ),
        (
            encode_raw_hist(hist_payload(data={"value": np.zeros(3)})),
            r"^histogram tag: data value shape \(3,\) does not match axes \(4, 2\)$",
        ),
    ],
    ids=message_id,
)
def test_bad_histogram_payloads_get_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(data)


ALLOWED_STANDARD_TAGS = {0, 1, 2, 3, 100, 258, 1004, 43000}


def test_every_tag_but_the_allowed_standard_ones_and_ours_is_refused() -> None:
    # pins cbor2's built-in tag set: a cbor2 upgrade that adds a tag fails here
    refusal = re.compile(r"^(unknown CBOR tag \d+|CBOR tag \d+ \(.+\) is not allowed on the wire)$")
    accepted = []
    for tag in [*range(70_000), 2**32 + 1, 2**64 - 1]:
        if tag in ALLOWED_STANDARD_TAGS:
            continue
        try:
            decode(tagged(tag, "x"))
        except ProtocolError as exc:
            if not refusal.match(str(exc)):
                accepted.append((tag, str(exc)))
        else:
            accepted.append((tag, "decoded"))
    assert accepted == []


file_records = st.builds(
    FileRecord,
    url=st.text(min_size=1, max_size=20),
    tree=st.none() | st.text(max_size=8),
    entries=st.none() | st.integers(0, 2**62),
    size=st.none() | st.integers(0, 2**62),
    checksum=st.none() | st.text(max_size=24),
    missing=st.booleans(),
    corrupt=st.booleans(),
    verified_at=st.none() | st.floats(allow_nan=False),
    trees=st.lists(st.tuples(st.text(max_size=8), st.integers(0, 2**62)), max_size=3).map(tuple),
    friend_url=st.none() | st.text(max_size=8),
    friend_entries=st.none() | st.integers(0, 100),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(file_records, max_size=3))
def test_file_records_round_trip_as_their_own_tag(records: list[FileRecord]) -> None:
    decoded = decode(encode({"records": records, "first": tuple(records[:1])}))
    assert decoded == {"records": records, "first": tuple(records[:1])}
    assert all(type(r) is FileRecord for r in decoded["records"])


def test_decode_refuses_non_bytes_with_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^decode\(\) needs bytes, not str$"):
        decode("abc")  # type: ignore[arg-type]


def test_decode_accepts_memoryview_and_bytearray() -> None:
    data = encode({"a": (1,)})
    assert decode(memoryview(data)) == decode(bytearray(data)) == {"a": (1,)}


# ------------------------------------------------------------------------- fuzz

EVERYTHING = {
    "tuple": (1, "x", (2.5, None)),
    "counter": collections.Counter({"a": 3, (1, 2): 4}),
    "array": np.arange(6, dtype=">f4").reshape(2, 3),
    "hist": hist.Hist(hist.axis.Regular(3, 0, 1, name="x"), storage=hist.storage.Weight()),
    "error": RemoteError(type="E", message="m", context={"worker": "w1"}),
    "set": {1, 2},
    "awkward": ak.Array([[1, 2], [], [3]]),
    "big": 2**70,
    "record": FileRecord(url="/d/a.root", tree="t", entries=3, trees=(("t", 3),)),
}
VALID = encode(EVERYTHING)


def decode_or_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


def test_every_truncation_of_a_valid_message_is_a_protocol_error() -> None:
    for end in range(len(VALID)):
        with pytest.raises(ProtocolError, match=r"^truncated CBOR data \(\d+ bytes\)$"):
            decode(VALID[:end])


def test_every_truncation_of_each_tag_is_a_protocol_error() -> None:
    for value in EVERYTHING.values():
        data = encode(value)
        for end in range(len(data)):
            with pytest.raises(ProtocolError):
                decode(data[:end])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    decode_or_protocol_error(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_valid_messages_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    decode_or_protocol_error(bytes(raw))


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=16)
    | st.sampled_from(["<f8", "|b1", "|O", "boost_histogram.Histogram", "hist.Hist"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8)
            | st.sampled_from(["class", "uhi", "data", "axes", "storage", "type", "context",
                               "url", "trees", "entries"]),
            inner,
            max_size=5,
        )
        | st.builds(cbor2.CBORTag, st.sampled_from(OUR_TAGS), inner)
    ),
    max_leaves=20,
)


@settings(max_examples=250, deadline=None)
@given(st.sampled_from(OUR_TAGS), cbor_values)
def test_valid_cbor_of_the_wrong_shape_in_our_tags_is_a_protocol_error(
    tag: int, payload: object
) -> None:
    decode_or_protocol_error(tagged(tag, payload))


def test_encoding_while_another_thread_imports_numpy_treats_it_as_not_there(monkeypatch):
    # a partially initialized numpy (the warm-up thread imports it) has no ndarray yet:
    # the master's actor thread, encoding a query spec then, crashed on it
    import collections
    import sys
    import types

    from pyproof.transport import codec

    half = types.ModuleType("numpy")
    half.__spec__ = types.SimpleNamespace(_initializing=True)
    monkeypatch.setitem(sys.modules, "numpy", half)
    counts = collections.Counter({"a": 2})
    assert codec.decode(codec.encode({"c": counts})) == {"c": collections.Counter({"a": 2})}
    with pytest.raises(codec.EncodeError):  # the fallback (it asks for numpy) says "no"
        codec.encode({"x": object()})
