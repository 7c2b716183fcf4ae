"""Frames: the versioned envelope around every message, and chunked streaming.

A frame is one CBOR map (see :mod:`pyproof.transport.codec`) with exactly the
keys ``version``, ``type``, ``session``, ``request_id`` and ``payload``.
:func:`decode_frame` checks the version before anything else, so a peer speaking
another protocol version gets an error that says so.

Large messages are not refused but streamed: :func:`encode_frames` encodes a
message once and, if it is larger than ``chunk_size``, cuts the bytes into
``"chunk"`` frames whose payload is ``{"stream", "index", "total", "data"}``.
A :class:`Reassembler` on the receiving side collects them (dropping duplicates,
refusing bad indexes and streams over its size cap) and hands back the original
frame once every chunk has arrived.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from typing import Any

from cbor2 import dumps as cbor2_dumps

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.transport.codec import (
    DEFAULT_MAX_FRAME,
    ProtocolError,
    cbor_kind,
    decode,
    decode_with_buffers,
    encode_with_buffers,
    is_plain,
)

__all__ = [
    "CHUNK",
    "DEFAULT_CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "Frame",
    "Reassembler",
    "ReassemblerStatistics",
    "chunk",
    "decode_frame",
    "encode_frame",
    "chunk_frame_parts",
    "encode_frames",
    "frame_parts",
]

PROTOCOL_VERSION = 1
"""Version of the envelope and of the meaning of its fields; bump on any change."""

CHUNK = "chunk"
"""Frame type of one piece of a chunked message."""

DEFAULT_CHUNK_SIZE = min(8 * 1024 * 1024, DEFAULT_MAX_FRAME // 2)
"""Bytes of encoded message per chunk frame (8 MiB; less if the frame cap is small)."""

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024 * 1024
"""Largest message a :class:`Reassembler` accepts by default (4 GiB)."""

_FIELDS = ("version", "type", "session", "request_id", "payload")
_FIELD_SET = frozenset(_FIELDS)
_CHUNK_FIELDS = ("stream", "index", "total", "data")


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One decoded message: envelope fields plus the payload."""

    version: int
    type: str
    session: str | None
    request_id: str | None
    payload: object


OOB_MAGIC = b"PYPF"
"""First bytes of a frame with out-of-band buffers (a plain frame starts with a CBOR map)."""
OOB_THRESHOLD = 64 * 1024
"""Arrays of this many bytes or more travel out of band: copied once, never CBOR-encoded."""
_OOB_HEAD = struct.Struct("<4sQI")  # magic, CBOR item length, buffer count
_OOB_SIZE = struct.Struct("<Q")


def encode_frame(
    type: str,
    payload: object,
    *,
    session: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """Encode one frame; raises ``EncodeError`` if the payload cannot travel.

    Large numpy arrays and byte strings do not go through CBOR: the frame is then
    ``PYPF | item length | buffer count | CBOR item | (size | raw bytes)...``,
    the item referring to each buffer by index (one copy on each side).
    """
    parts = frame_parts(type, payload, session=session, request_id=request_id)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def frame_parts(
    type: str,
    payload: object,
    *,
    session: str | None = None,
    request_id: str | None = None,
) -> list[bytes | memoryview]:
    """The pieces whose concatenation is :func:`encode_frame`'s answer.

    Out-of-band buffers are views of the payload's own memory: a sender that
    needs a prefix (a seal) joins once instead of twice.
    """
    _check_envelope(type, session, request_id)
    if is_plain(payload, 1):  # the small frames of every grant: cbor2's C encoder alone
        return [cbor2_dumps({"version": PROTOCOL_VERSION, "type": type, "session": session,
                             "request_id": request_id, "payload": payload})]
    item, buffers = encode_with_buffers(
        {
            "version": PROTOCOL_VERSION,
            "type": type,
            "session": session,
            "request_id": request_id,
            "payload": payload,
        },
        threshold=OOB_THRESHOLD,
    )
    if not buffers:
        return [item]
    parts: list[bytes | memoryview] = [_OOB_HEAD.pack(OOB_MAGIC, len(item), len(buffers)), item]
    for buffer in buffers:
        parts += [_OOB_SIZE.pack(buffer.nbytes), buffer]
    return parts


def _split_buffers(data: bytes, max_size: int) -> tuple[memoryview, list[memoryview]]:
    """The CBOR item and the out-of-band buffers of a ``PYPF`` frame (views, no copy)."""
    if len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_size} bytes")
    view = memoryview(data)
    if len(view) < _OOB_HEAD.size:
        raise ProtocolError(f"truncated frame header ({len(view)} bytes)")
    _, item_size, count = _OOB_HEAD.unpack_from(view)
    offset = _OOB_HEAD.size + item_size
    if offset > len(view):
        raise ProtocolError(f"frame declares a {item_size}-byte item but has {len(view)} bytes")
    if count > len(view):
        raise ProtocolError(f"frame declares {count} buffers in {len(view)} bytes")
    item, buffers = view[_OOB_HEAD.size:offset], []
    for index in range(count):
        if offset + _OOB_SIZE.size > len(view):
            raise ProtocolError(f"frame truncated before the size of buffer {index}")
        (size,) = _OOB_SIZE.unpack_from(view, offset)
        offset += _OOB_SIZE.size
        if offset + size > len(view):
            raise ProtocolError(f"buffer {index} of {size} bytes runs past the frame's end")
        buffers.append(view[offset:offset + size])
        offset += size
    if offset != len(view):
        raise ProtocolError(f"{len(view) - offset} trailing bytes after the frame's buffers")
    return item, buffers


def _check_envelope(type: Any, session: Any, request_id: Any) -> None:
    if not isinstance(type, str) or not type:
        raise TypeError(f"frame type must be a non-empty str, not {type!r}")
    if session is not None and not isinstance(session, str):
        raise TypeError(f"session must be a str or None, not {session!r}")
    if request_id is not None and not isinstance(request_id, str):
        raise TypeError(f"request_id must be a str or None, not {request_id!r}")


def decode_frame(data: bytes, *, max_size: int = DEFAULT_MAX_FRAME) -> Frame:
    """Decode one frame; raises :class:`ProtocolError` for anything malformed.

    Besides everything :func:`~pyproof.transport.codec.decode` refuses: a value
    that is not a map, a protocol version other than :data:`PROTOCOL_VERSION`,
    missing or extra fields, fields of the wrong type.
    """
    if bytes(data[:4]) == OOB_MAGIC:
        item, buffers = _split_buffers(data, max_size)
        value = decode_with_buffers(item, buffers, max_size=max_size)
    else:
        value = decode(data, max_size=max_size)
    if not isinstance(value, dict):
        raise ProtocolError(f"frame must be a CBOR map, got {cbor_kind(value)}")
    if "version" not in value:
        raise ProtocolError("frame has no version field")
    version = value["version"]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ProtocolError(
            f"unsupported protocol version {version!r} (this side speaks {PROTOCOL_VERSION})"
        )
    if value.keys() != _FIELD_SET:
        missing = [name for name in _FIELDS if name not in value]
        if missing:
            raise ProtocolError(f"frame is missing field(s) {', '.join(missing)}")
        extra = sorted(repr(name) for name in value if name not in _FIELDS)
        raise ProtocolError(f"frame has unknown field(s) {', '.join(extra)}")
    kind, session, request_id = value["type"], value["session"], value["request_id"]
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(f"frame type must be non-empty text, got {cbor_kind(kind)}")
    if session is not None and not isinstance(session, str):
        raise ProtocolError(f"frame session must be text or null, got {cbor_kind(session)}")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"frame request_id must be text or null, got {cbor_kind(request_id)}")
    return Frame(
        version=version,
        type=kind,
        session=session,
        request_id=request_id,
        payload=value["payload"],
    )


# --------------------------------------------------------------------------- chunks


def chunk(data: bytes, size: int) -> list[memoryview]:
    """Cut ``data`` into views of at most ``size`` bytes (one piece if empty); no copy."""
    if type(size) is not int or size < 1:
        raise ValueError(f"chunk size must be a positive int, not {size!r}")
    view = memoryview(data).cast("B")
    if not data:
        return [view]
    return [view[start : start + size] for start in range(0, len(view), size)]


def encode_frames(
    type: str,
    payload: object,
    *,
    stream: str,
    session: str | None = None,
    request_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[bytes]:
    """Encode a message as one frame, or as ``"chunk"`` frames if it is larger
    than ``chunk_size`` bytes. ``stream`` names the chunk stream and must be
    unique among the sender's streams in flight (e.g. a request id plus a counter).
    """
    whole = encode_frame(type, payload, session=session, request_id=request_id)
    if len(whole) <= chunk_size:
        return [whole]
    return [b"".join(parts) for parts in chunk_frame_parts(
        whole, stream=stream, chunk_size=chunk_size, session=session, request_id=request_id)]


def chunk_frame_parts(
    whole: bytes,
    *,
    stream: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    session: str | None = None,
    request_id: str | None = None,
) -> list[list[bytes | memoryview]]:
    """The ``"chunk"`` frames (each as :func:`frame_parts`) of an encoded message.

    The pieces are views of ``whole``: each is copied once, when its frame is sent.
    """
    if not isinstance(stream, str) or not stream:
        raise TypeError(f"stream must be a non-empty str, not {stream!r}")
    pieces = chunk(whole, chunk_size)
    return [
        frame_parts(
            CHUNK,
            {"stream": stream, "index": index, "total": len(pieces), "data": piece},
            session=session,
            request_id=request_id,
        )
        for index, piece in enumerate(pieces)
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReassemblerStatistics:
    """A snapshot of a :class:`Reassembler`."""

    streams_open: int
    bytes_buffered: int
    messages_completed: int
    duplicates_dropped: int


@dataclass(slots=True)
class _Stream:
    total: int
    pieces: dict[int, bytes] = dataclasses.field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects ``"chunk"`` frames back into the frames they were cut from.

    Feed every chunk frame to :meth:`add`; it returns the original :class:`Frame`
    when the last missing chunk of its stream arrives, else ``None``. Duplicate
    chunks are dropped, also when they arrive after their stream completed (the
    last ``remember`` completed stream ids are kept for that).

    :class:`ProtocolError` is raised (and the stream is discarded) for a
    malformed chunk, an index outside ``[0, total)``, a total that changes
    within a stream, a stream whose chunks add up to more than ``max_message``
    bytes, or more than ``max_streams`` streams open at once.
    Call :meth:`discard` to drop a stream whose sender is gone.
    """

    def __init__(
        self,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_streams: int = 64,
        remember: int = 1024,
    ) -> None:
        self.max_message = max_message
        self.max_streams = max_streams
        self._streams: dict[str, _Stream] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember
        self._completed = 0
        self._duplicates = 0

    def add(self, frame: Frame) -> Frame | None:
        """Take one chunk frame; return the reassembled frame when it is complete."""
        if frame.type != CHUNK:
            raise ProtocolError(f"expected a {CHUNK!r} frame, got {frame.type!r}")
        stream_id, index, total, data = self._fields(frame.payload)
        if stream_id in self._finished:
            self._duplicates += 1
            return None
        stream = self._streams.get(stream_id)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                raise ProtocolError(
                    f"chunk stream {stream_id!r}: already {len(self._streams)} streams open "
                    f"(limit {self.max_streams})"
                )
            stream = self._streams[stream_id] = _Stream(total=total)
        elif total != stream.total:
            self.discard(stream_id)
            raise ProtocolError(
                f"chunk stream {stream_id!r}: total changed from {stream.total} to {total}"
            )
        if index in stream.pieces:
            self._duplicates += 1
            return None
        if stream.size + len(data) > self.max_message:
            self.discard(stream_id)
            raise ProtocolError(
                f"chunk stream {stream_id!r}: message exceeds the limit of {self.max_message} bytes"
            )
        stream.pieces[index] = data
        stream.size += len(data)
        if len(stream.pieces) < stream.total:
            return None
        del self._streams[stream_id]
        self._finished[stream_id] = None
        if len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        whole = b"".join(stream.pieces[i] for i in range(stream.total))
        self._completed += 1
        return decode_frame(whole, max_size=self.max_message)

    def _fields(self, payload: object) -> tuple[str, int, int, bytes]:
        if not isinstance(payload, dict) or set(payload) != set(_CHUNK_FIELDS):
            raise ProtocolError("chunk payload must be a map with keys stream, index, total, data")
        stream_id, index, total, data = (payload[name] for name in _CHUNK_FIELDS)
        if not isinstance(stream_id, str) or not stream_id:
            raise ProtocolError("chunk stream must be non-empty text")
        if type(total) is not int or total < 1:
            raise ProtocolError(f"chunk stream {stream_id!r}: bad total {total!r}")
        if type(index) is not int or not 0 <= index < total:
            raise ProtocolError(f"chunk stream {stream_id!r}: index {index!r} outside [0, {total})")
        if not isinstance(data, bytes):
            raise ProtocolError(f"chunk stream {stream_id!r}: data must be bytes")
        if not data and total > 1:
            raise ProtocolError(f"chunk stream {stream_id!r}: empty chunk {index} of {total}")
        return stream_id, index, total, data

    def finished(self, stream_id: object) -> bool:
        """True if ``stream_id`` completed recently (a chunk of it now is a resend)."""
        return isinstance(stream_id, str) and stream_id in self._finished

    def open_streams(self) -> list[str]:
        """The ids of streams still waiting for chunks."""
        return list(self._streams)

    def discard(self, stream_id: str) -> None:
        """Forget a partial stream (its sender died or timed out); no-op if unknown."""
        self._streams.pop(stream_id, None)

    def statistics(self) -> ReassemblerStatistics:
        return ReassemblerStatistics(
            streams_open=len(self._streams),
            bytes_buffered=sum(s.size for s in self._streams.values()),
            messages_completed=self._completed,
            duplicates_dropped=self._duplicates,
        )
