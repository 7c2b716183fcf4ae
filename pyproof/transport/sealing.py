"""Sealed data frames: an HMAC-SHA256 tag in front of every frame on a session's data channel.

The key is derived on both ends from the user's secret and the session id,
so it never travels: the client computes it from its own secret, the daemon
from the secret it holds for that user. A frame from anyone else (another
user, a stranger who found the port) fails the check and is dropped.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_SIZE = 32
_LABEL = b"pyproof-data-v1"


class SealError(ValueError):
    """A data frame was not sealed with this session's key; drop it."""


def data_key(secret: bytes, session_id: str) -> bytes:
    return hmac.new(secret, _LABEL + b"\0" + session_id.encode(), hashlib.sha256).digest()


def seal(key: bytes, frame: bytes) -> bytes:
    return seal_parts(key, [frame])


def seal_parts(key: bytes, parts: list[bytes | memoryview]) -> bytes:
    """The tag and the frame made of ``parts`` (see ``frames.frame_parts``), joined once."""
    return b"".join(sealed_parts(key, parts))


def sealed_parts(key: bytes, parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """The tag followed by ``parts``: for ``wire.send_parts``, which copies each once."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return [mac.digest(), *parts]


def unseal(key: bytes, wire: bytes) -> memoryview:
    """The frame inside `wire` (a view: no copy); SealError if the tag does not match."""
    if len(wire) < TAG_SIZE:
        raise SealError(f"data frame of {len(wire)} bytes is shorter than its tag")
    view = memoryview(wire)
    tag, frame = view[:TAG_SIZE], view[TAG_SIZE:]
    if not hmac.compare_digest(tag, hmac.new(key, frame, hashlib.sha256).digest()):
        raise SealError("data frame is not sealed with this session's key")
    return frame
