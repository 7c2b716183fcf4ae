"""The client's direct route to its session's master (see actors/master_direct.py).

A query's start (and stop) normally travels client -> gateway -> sessions ->
session -> master; once the gateway has offered the master's own address (in
the answer to a query it let through), the session sends the next ones
there itself, sealed with the session's data key, and saves those hops.

The route is only ever a shortcut: when it does not answer within a bound
(the master restarting, a daemon restart, a client on another host that
cannot reach the local socket) the request goes the long way under the same
query id, so the master runs it once whichever way it came first. A master
that refuses the request itself (bad key, unknown session) is an error the
user is told (`DirectRefused`), not a reason to try again.
"""

from __future__ import annotations

import threading
from typing import Any

import pynng

from pyproof.errors import DirectRefused, QueryError
from pyproof.transport import sealing
from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.wire import RECV_LIMIT

__all__ = ["DirectRefused", "DirectRoute"]

SEND_WITHIN_MS = 500  # nothing takes the request by then: the master is down, go the long way
ANSWER_WITHIN_MS = 1_000  # nor answers it: the long way (the same query id: run once)


class DirectRoute:
    """One req socket to the master's direct route. `call` returns the answer's payload, or
    None when the route did not answer (go the long way); it raises QueryError for a
    master's "no" (DirectRefused when it would not take the request at all)."""

    def __init__(self, address: str, session_id: str, key: bytes) -> None:
        self.address, self.session_id, self.key = address, session_id, key
        self.socket = pynng.Req0(send_timeout=SEND_WITHIN_MS, recv_timeout=ANSWER_WITHIN_MS,
                                 resend_time=-1, recv_max_size=RECV_LIMIT)
        self._lock = threading.Lock()  # one request at a time on a req socket
        try:
            # ipc: refused at once when nothing listens (a client on another host, a
            # master whose route could not be made); afterwards nng redials by itself
            self.socket.dial(address, block=True)
        except BaseException:
            self.socket.close()
            raise

    def call(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        data = sealing.seal(self.key, encode_frame(kind, payload, session=self.session_id))
        if not self._lock.acquire(timeout=ANSWER_WITHIN_MS / 1000):
            return None
        try:
            self.socket.send(data)
            wire = self.socket.recv()
        except pynng.NNGException:  # the session forgets the route and learns it again
            return None
        finally:
            self._lock.release()
        try:
            try:
                frame = decode_frame(sealing.unseal(self.key, wire))
            except sealing.SealError:
                frame = decode_frame(wire)  # a refusal is not sealed (the key is the question)
                if frame.type == "error" and isinstance(frame.payload, dict) and \
                        frame.payload.get("refused") is True:
                    raise DirectRefused(
                        f"the master of session {self.session_id} ({self.address}) refused "
                        f"{kind!r}: {frame.payload.get('message')}") from None
                return None  # not our master's answer: the long way decides
        except ProtocolError:
            return None
        body = frame.payload if isinstance(frame.payload, dict) else {}
        if frame.type == "ok":
            return body
        raise QueryError(str(body.get("message")))

    def close(self) -> None:
        self.socket.close()
