"""Frames: the versioned envelope, and chunked streaming of large messages."""

from __future__ import annotations

import contextlib
import random

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyproof.transport as transport
from pyproof.transport import codec, frames
from pyproof.transport.codec import ProtocolError, encode
from pyproof.transport.frames import (
    CHUNK,
    PROTOCOL_VERSION,
    Frame,
    Reassembler,
    chunk,
    decode_frame,
    encode_frame,
    encode_frames,
)

ids = st.none() | st.text(min_size=1, max_size=12)
payloads = st.recursive(
    st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


def envelope(**changes: object) -> bytes:
    """A raw frame map with some fields changed (or removed, with ...)."""
    fields = {"version": 1, "type": "ping", "session": "s1", "request_id": "r1", "payload": {}}
    fields.update(changes)
    return encode({k: v for k, v in fields.items() if v is not ...})


def test_public_names_are_re_exported_from_the_package() -> None:
    for module in (codec, frames):
        for name in module.__all__:
            if not name.startswith("TAG_"):
                assert getattr(transport, name) is getattr(module, name), name
    assert set(transport.__all__) <= set(codec.__all__) | set(frames.__all__)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=20), payloads, ids, ids)
def test_frames_round_trip(kind: str, payload: object, session: str | None, rid: str | None):
    frame = decode_frame(encode_frame(kind, payload, session=session, request_id=rid))
    assert frame == Frame(
        version=PROTOCOL_VERSION, type=kind, session=session, request_id=rid, payload=payload
    )


def test_frame_is_frozen_slotted_and_keyword_only() -> None:
    frame = Frame(version=1, type="t", session=None, request_id=None, payload=None)
    with pytest.raises(AttributeError):
        frame.type = "u"  # type: ignore[misc]
    assert not hasattr(frame, "__dict__")
    with pytest.raises(TypeError):
        Frame(1, "t", None, None, None)  # type: ignore[misc]


def test_frames_carry_numpy_payloads() -> None:
    frame = decode_frame(encode_frame("result", {"h": np.arange(3)}, session="s"))
    assert frame.payload["h"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (envelope(version=2), r"^unsupported protocol version 2 \(this side speaks 1\)$"),
        (envelope(version="1"), r"^unsupported protocol version '1' \(this side speaks 1\)$"),
        (envelope(version=True), r"^unsupported protocol version True \(this side speaks 1\)$"),
        (envelope(version=...), r"^frame has no version field$"),
        (encode([1, "ping"]), r"^frame must be a CBOR map, got array of 2$"),
        (encode(None), r"^frame must be a CBOR map, got null$"),
        (envelope(payload=...), r"^frame is missing field\(s\) payload$"),
        (envelope(type=..., session=...), r"^frame is missing field\(s\) type, session$"),
        (envelope(extra=1, more=2), r"^frame has unknown field\(s\) 'extra', 'more'$"),
        (envelope(type=""), r"^frame type must be non-empty text, got text$"),
        (envelope(type=3), r"^frame type must be non-empty text, got integer$"),
        (envelope(session=b"s"), r"^frame session must be text or null, got bytes$"),
        (envelope(request_id=[1]), r"^frame request_id must be text or null, got array of 1$"),
        (b"\xa1", r"^truncated CBOR data \(1 bytes\)$"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-",
)
def test_bad_frames_get_a_protocol_error_that_says_what(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_frame(data)


def test_wrong_version_is_reported_even_if_the_rest_of_the_envelope_changed() -> None:
    data = encode({"version": 2, "kind": "ping", "body": [1, 2]})
    with pytest.raises(
        ProtocolError, match=r"^unsupported protocol version 2 \(this side speaks 1\)$"
    ):
        decode_frame(data)


def test_oversize_frames_are_refused() -> None:
    data = encode_frame("result", b"x" * 1000)
    with pytest.raises(
        ProtocolError, match=rf"^frame of {len(data)} bytes exceeds the limit of 100 bytes$"
    ):
        decode_frame(data, max_size=100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": ""}, r"^frame type must be a non-empty str, not ''$"),
        ({"session": 3}, r"^session must be a str or None, not 3$"),
        ({"request_id": b"r"}, r"^request_id must be a str or None, not b'r'$"),
    ],
)
def test_encode_frame_checks_the_envelope(kwargs: dict, message: str) -> None:
    args = {"type": "ping", "payload": None, **kwargs}
    with pytest.raises(TypeError, match=message):
        encode_frame(args.pop("type"), args.pop("payload"), **args)


def test_every_truncation_of_a_frame_is_a_protocol_error() -> None:
    data = encode_frame("result", {"h": np.arange(10), "t": (1, 2)}, session="s", request_id="r")
    for end in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_frame(data[:end])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_random_bytes_are_a_frame_or_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


frame_shaped = st.dictionaries(
    st.sampled_from(["version", "type", "session", "request_id", "payload", "x"]),
    st.none()
    | st.integers(0, 3)
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.lists(st.none()),
)


@settings(max_examples=150, deadline=None)
@given(frame_shaped | payloads)
def test_valid_cbor_of_the_wrong_shape_is_a_frame_or_a_protocol_error(value: object) -> None:
    with contextlib.suppress(ProtocolError):
        frame = decode_frame(cbor2.dumps(value))
        assert isinstance(frame.type, str)


# ------------------------------------------------------------------------ chunks


@given(st.binary(max_size=100), st.integers(1, 30))
def test_chunk_cuts_data_into_pieces_of_at_most_size(data: bytes, size: int) -> None:
    pieces = chunk(data, size)
    assert b"".join(pieces) == data
    assert all(1 <= len(p) <= size for p in pieces) or pieces == [b""]
    assert len(pieces) == max(1, -(-len(data) // size))


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_chunk_refuses_a_bad_size(size: object) -> None:
    with pytest.raises(ValueError, match=r"^chunk size must be a positive int, not .+$"):
        chunk(b"abc", size)  # type: ignore[arg-type]


def test_small_messages_are_one_ordinary_frame() -> None:
    [single] = encode_frames("result", {"a": 1}, stream="s1", session="s", request_id="r")
    assert single == encode_frame("result", {"a": 1}, session="s", request_id="r")


def big_message(seed: int = 0) -> tuple[dict, list[bytes]]:
    payload = {"array": np.random.default_rng(seed).random(2000), "n": seed}
    parts = encode_frames(
        "result", payload, stream=f"q{seed}", session="s", request_id="r", chunk_size=1000
    )
    return payload, parts


def test_large_messages_are_cut_into_chunk_frames_that_carry_stream_index_and_total() -> None:
    _, parts = big_message()
    chunks = [decode_frame(p) for p in parts]
    assert len(chunks) == 17
    assert all(f.type == CHUNK and f.session == "s" and f.request_id == "r" for f in chunks)
    assert [f.payload["index"] for f in chunks] == list(range(17))
    assert {f.payload["total"] for f in chunks} == {17}
    assert {f.payload["stream"] for f in chunks} == {"q0"}
    assert all(len(p) < 1100 for p in parts)


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 5))
def test_reassembler_rebuilds_the_message_from_shuffled_duplicated_chunks(
    rng: random.Random, duplicates: int
) -> None:
    payload, parts = big_message()
    arrivals = parts + [rng.choice(parts) for _ in range(duplicates)]
    rng.shuffle(arrivals)
    reassembler = Reassembler()
    done = [f for f in (reassembler.add(decode_frame(p)) for p in arrivals) if f is not None]
    assert len(done) == 1
    frame = done[0]
    assert (frame.type, frame.session, frame.request_id) == ("result", "s", "r")
    assert frame.payload["array"].tobytes() == payload["array"].tobytes()
    stats = reassembler.statistics()
    assert stats.streams_open == 0 and stats.bytes_buffered == 0
    assert stats.messages_completed == 1
    assert stats.duplicates_dropped == duplicates


def test_reassembler_keeps_interleaved_streams_apart() -> None:
    (_, parts0), (_, parts1) = big_message(0), big_message(1)
    reassembler = Reassembler()
    out = []
    for a, b in zip(parts0, parts1, strict=True):
        out += [reassembler.add(decode_frame(a)), reassembler.add(decode_frame(b))]
    done = [f.payload["n"] for f in out if f is not None]
    assert done == [0, 1]


def chunk_frame(**payload: object) -> Frame:
    fields = {"stream": "q", "index": 0, "total": 2, "data": b"x", **payload}
    return Frame(version=1, type=CHUNK, session=None, request_id=None, payload=fields)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (chunk_frame(index=2), r"^chunk stream 'q': index 2 outside \[0, 2\)$"),
        (chunk_frame(index=-1), r"^chunk stream 'q': index -1 outside \[0, 2\)$"),
        (chunk_frame(index="0"), r"^chunk stream 'q': index '0' outside \[0, 2\)$"),
        (chunk_frame(total=0), r"^chunk stream 'q': bad total 0$"),
        (chunk_frame(stream=""), r"^chunk stream must be non-empty text$"),
        (chunk_frame(data="x"), r"^chunk stream 'q': data must be bytes$"),
        (chunk_frame(data=b""), r"^chunk stream 'q': empty chunk 0 of 2$"),
        (
            Frame(version=1, type=CHUNK, session=None, request_id=None, payload=[1]),
            r"^chunk payload must be a map with keys stream, index, total, data$",
        ),
        (
            Frame(version=1, type="result", session=None, request_id=None, payload={}),
            r"^expected a 'chunk' frame, got 'result'$",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "-",
)
def test_reassembler_refuses_bad_chunks(frame: Frame, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Reassembler().add(frame)


def test_reassembler_refuses_a_total_that_changes_and_drops_the_stream() -> None:
    reassembler = Reassembler()
    reassembler.add(chunk_frame(index=0, total=3))
    with pytest.raises(ProtocolError, match=r"^chunk stream 'q': total changed from 3 to 2$"):
        reassembler.add(chunk_frame(index=1, total=2))
    assert reassembler.statistics().streams_open == 0


def test_reassembler_refuses_a_stream_over_its_size_cap() -> None:
    reassembler = Reassembler(max_message=10)
    reassembler.add(chunk_frame(index=0, total=3, data=b"x" * 6))
    with pytest.raises(
        ProtocolError, match=r"^chunk stream 'q': message exceeds the limit of 10 bytes$"
    ):
        reassembler.add(chunk_frame(index=1, total=3, data=b"x" * 5))
    assert reassembler.statistics().streams_open == 0


def test_reassembler_refuses_too_many_open_streams() -> None:
    reassembler = Reassembler(max_streams=2)
    reassembler.add(chunk_frame(stream="a"))
    reassembler.add(chunk_frame(stream="b"))
    with pytest.raises(
        ProtocolError, match=r"^chunk stream 'c': already 2 streams open \(limit 2\)$"
    ):
        reassembler.add(chunk_frame(stream="c"))
    reassembler.discard("a")
    assert reassembler.add(chunk_frame(stream="c")) is None


def test_reassembler_drops_duplicates_and_counts_them() -> None:
    reassembler = Reassembler()
    assert reassembler.add(chunk_frame(index=0)) is None
    assert reassembler.add(chunk_frame(index=0, data=b"y")) is None
    stats = reassembler.statistics()
    assert (stats.streams_open, stats.bytes_buffered, stats.duplicates_dropped) == (1, 1, 1)


def test_reassembler_forgets_only_the_oldest_completed_streams() -> None:
    reassembler = Reassembler(remember=1)
    for stream in ("a", "b"):
        assert reassembler.add(chunk_frame(stream=stream, total=1, data=encode_frame("t", 1)))
    assert reassembler.add(chunk_frame(stream="b", total=1, data=b"late")) is None
    assert reassembler.statistics().duplicates_dropped == 1
    # "a" was forgotten: a late chunk of it opens a new stream again
    assert reassembler.add(chunk_frame(stream="a", index=0, total=2)) is None
    assert reassembler.statistics().streams_open == 1


def test_a_reassembled_message_that_is_not_a_frame_is_a_protocol_error() -> None:
    reassembler = Reassembler()
    reassembler.add(chunk_frame(index=0, data=b"\x82"))
    with pytest.raises(ProtocolError, match=r"^truncated CBOR data \(2 bytes\)$"):
        reassembler.add(chunk_frame(index=1, data=b"\x01"))


# -- the fast path of small plain frames (every packet grant) ---------------------------------

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(payload=plain, session=ids)
def test_a_plain_payload_takes_the_fast_path_to_the_same_bytes(payload, session):
    assert codec.is_plain(payload)
    generic = encode({"version": PROTOCOL_VERSION, "type": "next", "session": session,
                      "request_id": None, "payload": payload})
    assert encode_frame("next", payload, session=session) == generic
    assert decode_frame(generic).payload == payload


class _Kind(str):
    pass


@pytest.mark.parametrize("value", [
    (1, 2), {"a": (1,)}, [b"x"], {1: "int key"}, _Kind("sub"), {"s": {1, 2}},
    np.int64(3), [[[[[[[[[[1]]]]]]]]]], {"a": np.zeros(3)},
])
def test_anything_but_exact_plain_types_takes_the_tagged_path(value):
    assert not codec.is_plain(value)
    assert decode_frame(encode_frame("x", value)).payload is not None  # and still travels


def test_the_grant_frames_are_plain():
    packet = {"packet": {"packet_id": 7, "element": 0, "entry_start": 0, "entry_stop": 10},
              "path": "/data/a.root", "tree": "Events"}
    nxt = {"worker": "worker-0", "pid": 12, "query": "q1",
           "processed": [{"packet": 6, "entries": 10, "bytes": 0, "seconds": 0.5}]}
    assert codec.is_plain(packet) and codec.is_plain(nxt)
