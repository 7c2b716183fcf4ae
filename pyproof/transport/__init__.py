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

The names are imported on first use (PEP 562): the daemon imports `auth` and
`tls` to boot, and must not pay for the codec (numpy) there: that is on the
critical path of a lite session's start-up (see pyproof/bench/startup.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproof.lazy import lazy_attributes

if TYPE_CHECKING:
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

_CODEC = ("DEFAULT_MAX_FRAME", "SUPPORTED_TYPES", "EncodeError", "ProtocolError", "RemoteError",
          "decode", "encode")
_LAZY = {name: "pyproof.transport.codec" for name in _CODEC}


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

__getattr__, __dir__ = lazy_attributes(
    __name__, globals(),
    lambda name: _LAZY.get(name, "pyproof.transport.frames" if name in __all__ else None),
    __all__)
