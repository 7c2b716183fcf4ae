"""Transport: the one wire format, and (to come) nng connections and authentication.

- :mod:`pyproof.transport.codec`: :func:`encode` / :func:`decode` (CBOR with
  pyproof's extension tags), :class:`ProtocolError`, :class:`EncodeError`,
  :class:`RemoteError`.
- :mod:`pyproof.transport.frames`: the versioned envelope (:class:`Frame`,
  :func:`encode_frame`, :func:`decode_frame`) and chunked streaming of large
  messages (:func:`encode_frames`, :class:`Reassembler`).
"""

from pyproof.transport.codec import (
    DEFAULT_MAX_FRAME,
    EncodeError,
    ProtocolError,
    RemoteError,
    decode,
    encode,
)
from pyproof.transport.frames import (
    CHUNK,
    DEFAULT_CHUNK_SIZE,
    PROTOCOL_VERSION,
    Frame,
    Reassembler,
    ReassemblerStatistics,
    chunk,
    decode_frame,
    encode_frame,
    encode_frames,
)

__all__ = [
    "CHUNK",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_FRAME",
    "PROTOCOL_VERSION",
    "EncodeError",
    "Frame",
    "ProtocolError",
    "Reassembler",
    "ReassemblerStatistics",
    "RemoteError",
    "chunk",
    "decode",
    "decode_frame",
    "encode",
    "encode_frame",
    "encode_frames",
]
