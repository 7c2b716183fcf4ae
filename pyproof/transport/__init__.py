"""Transport: the one wire format, sealing, authentication and TLS.

- :mod:`pyproof.transport.codec`: :func:`encode` / :func:`decode` (CBOR with
  pyproof's extension tags), :class:`ProtocolError`, :class:`EncodeError`,
  :class:`RemoteError`.
- :mod:`pyproof.transport.frames`: the versioned envelope (:class:`Frame`,
  :func:`encode_frame`, :func:`decode_frame`) and chunked streaming of large
  messages (:func:`encode_frames`, :class:`Reassembler`).
- :mod:`pyproof.transport.sealing`: HMAC-sealed data frames.
- :mod:`pyproof.transport.auth` and :mod:`pyproof.transport.tls`: the login
  handshake, secrets and tokens; TLS configuration in one place.
"""

from pyproof.transport.codec import (
    DEFAULT_MAX_FRAME,
    SUPPORTED_TYPES,
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
    chunk_frame_parts,
    decode_frame,
    encode_frame,
    encode_frames,
    frame_parts,
)

__all__ = [
    "CHUNK",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_FRAME",
    "PROTOCOL_VERSION",
    "SUPPORTED_TYPES",
    "EncodeError",
    "Frame",
    "ProtocolError",
    "Reassembler",
    "ReassemblerStatistics",
    "RemoteError",
    "chunk",
    "chunk_frame_parts",
    "decode",
    "decode_frame",
    "encode",
    "encode_frame",
    "encode_frames",
    "frame_parts",
]
