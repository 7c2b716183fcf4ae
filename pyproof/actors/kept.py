"""A kept final frame, sent again on the client's data plane (`session.result(query_id)`).

The master keeps each ended query's final frame (RESULT or ERROR, `MasterPlane.results`)
for a client that was away. Such a client used to fetch it as the answer to a control
request, one Thespian message through the daemon's actors: 24 MB took 2.4 s, 64 MB never
came in 60 s, and every retry of the request made the master send it all again. Now the
control request is small (`fetch_result` with `resend`: a nonce, and the client's data
address) and the master sends the frame where live results go: the client's data socket
(dialled back to `address`, or the session's outbox a dialling client reads), cut into
sealed CHUNK frames, from a thread of its own.

The chunks' stream is `kept/<nonce>`, never a query id (a live result's stream): a
client tells a resent frame from a live one by it, takes it only for a nonce it asked
for, and only if the query's handle has no final frame yet, so the user gets a query's
outcome exactly once, whichever of the live and the kept frame comes first. A request
retried under the same nonce is answered without a second send.

Pure naming (`kept_stream`, `kept_nonce`, `within`) and one sender (`send_kept`), with
no lock or state of the plane's: the plane decides what to send where.
"""

from __future__ import annotations

import time

import pynng

from pyproof.transport import sealing
from pyproof.transport.frames import chunk_frame_parts
from pyproof.transport.wire import SendGuard, send_parts

STREAM_PREFIX = "kept/"
MAX_NONCE = 64
CHUNK_SIZE = 8 * 1024 * 1024  # as a live result's (master_query.CHUNK_SIZE)
INLINE_MAX = 1024 * 1024  # no data socket to send on: a frame this small is answered inline
CHUNK_WITHIN = 10.0  # one chunk the client's socket does not take by then: the send ends
RETRY_PAUSE = 0.002  # between tries of a chunk the socket cannot take yet
# the client waits this long, plus a second per RATE bytes, for the frame to come
BASE_WITHIN = 30.0
RATE = 10e6


def kept_stream(nonce: str) -> str:
    return STREAM_PREFIX + nonce


def kept_nonce(stream: object) -> str | None:
    """The nonce of a resent frame's stream; None for any other stream (a live result's)."""
    if isinstance(stream, str) and stream.startswith(STREAM_PREFIX):
        return stream[len(STREAM_PREFIX):] or None
    return None


def valid_nonce(nonce: object) -> bool:
    return isinstance(nonce, str) and 0 < len(nonce) <= MAX_NONCE and nonce.isalnum()


def within(size: int) -> float:
    """How long a client waits for a resent frame of `size` bytes (generous: a loaded host)."""
    return BASE_WITHIN + size / RATE


def send_kept(sock: pynng.Socket, frame: bytes, *, nonce: str, data_key: bytes,
              session: str, guard: SendGuard, chunk_within: float = CHUNK_WITHIN) -> bool:
    """Send `frame` on `sock` as sealed CHUNK frames of stream `kept/<nonce>` (always
    chunks, one for a small frame: the stream says it is a resent one). False if a chunk
    could not leave within `chunk_within` s or the plane closed (`guard`: each try is
    one of its sends, which `MasterPlane.close` waits for before it closes the socket).

    Every try is non-blocking (the socket is shared with live queries, whose send
    timeouts are theirs to set); bounded by `chunk_within` per chunk.
    """
    for parts in chunk_frame_parts(frame, stream=kept_stream(nonce), chunk_size=CHUNK_SIZE,
                                   session=session):
        wire = sealing.sealed_parts(data_key, parts) if data_key else parts
        deadline = time.monotonic() + chunk_within
        while True:
            with guard.sending() as usable:
                if not usable:
                    return False
                try:
                    send_parts(sock, wire, block=False)
                    break
                except pynng.TryAgain:
                    pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(RETRY_PAUSE)
    return True
